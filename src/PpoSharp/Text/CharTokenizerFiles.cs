using System.Text.Json.Nodes;

namespace PpoSharp.Text;

/// <summary>
/// The character tokenizer as Hugging Face files: <c>tokenizer.json</c> with a WordLevel model (every id, in id order:
/// the unknown symbol U+FFFD, the role tokens, the alphabet), a Split pre-tokenizer that isolates every character
/// (code point), a Fuse decoder and the role tokens as special added tokens; and <c>tokenizer_config.json</c> with the
/// special tokens and the role format as its chat template. <c>tokenizers</c>, transformers and transformers.js read
/// them and give PpoSharp's ids.
/// </summary>
public static class CharTokenizerFiles
{
    public const string UnknownSymbol = "\uFFFD";

    /// <summary>The pre-tokenizer's pattern: any one character, newlines included (in Oniguruma and JavaScript's u mode alike).</summary>
    public const string EveryCharacter = @"[\s\S]";

    public static void Save(CharTokenizer tokenizer, string directory)
    {
        AtomicFile.WriteText(Path.Combine(directory, Tokenizers.FileName), TokenizerJson(tokenizer).ToJsonString(Json.Options));
        AtomicFile.WriteText(Path.Combine(directory, HfConfigFiles.TokenizerConfig), ConfigJson(tokenizer).ToJsonString(Json.Options));
    }

    public static JsonObject TokenizerJson(CharTokenizer tokenizer)
    {
        var vocab = new JsonObject();
        for (int id = 0; id < tokenizer.VocabSize; id++) vocab[tokenizer.Symbol(id)] = id;
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray([.. SpecialTokens.All.Select((t, i) => (JsonNode)AddedToken(t, tokenizer.Roles.Pad + i))]),
            ["normalizer"] = null,
            ["pre_tokenizer"] = PreTokenizer(),
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "Fuse" },
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = UnknownSymbol },
        };
    }

    private static JsonObject PreTokenizer() => new()
    {
        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = EveryCharacter }, ["behavior"] = "Isolated", ["invert"] = false,
    };

    private static JsonObject AddedToken(string content, int id) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = false, ["special"] = true,
    };

    /// <summary>tokenizer_config.json: the special tokens, no space clean-up on decode, and the role format as the chat template.</summary>
    public static JsonObject ConfigJson(CharTokenizer tokenizer) => new()
    {
        ["tokenizer_class"] = "PreTrainedTokenizerFast",
        ["unk_token"] = UnknownSymbol,
        ["pad_token"] = SpecialTokens.Pad,
        ["eos_token"] = SpecialTokens.End,
        ["additional_special_tokens"] = new JsonArray(SpecialTokens.System, SpecialTokens.User, SpecialTokens.Assistant),
        ["clean_up_tokenization_spaces"] = false,
        ["model_max_length"] = 1_000_000_000,
        ["chat_template"] = HfTokenizer.RoleFormatTemplate,
    };

    /// <summary>
    /// The character tokenizer a <c>tokenizer.json</c> describes, when it has exactly the form <see cref="TokenizerJson"/>
    /// writes (a WordLevel model over U+FFFD, the role tokens and an ordinally sorted alphabet, split per character); else
    /// null (some other WordLevel tokenizer, for the Hugging Face loader).
    /// </summary>
    public static CharTokenizer? TryRead(JsonObject root)
    {
        if (root["model"] is not JsonObject { } model || Text(model["type"]) != "WordLevel" || Text(model["unk_token"]) != UnknownSymbol
            || !JsonNode.DeepEquals(root["pre_tokenizer"], PreTokenizer()) || model["vocab"] is not JsonObject vocab) return null;
        var symbols = new string[vocab.Count];
        foreach (var (token, value) in vocab)
        {
            if (value is not JsonValue v || !v.TryGetValue(out int id) || id < 0 || id >= symbols.Length || symbols[id] is not null) return null;
            symbols[id] = token;
        }
        var head = new[] { UnknownSymbol }.Concat(SpecialTokens.All).ToArray();
        if (symbols.Length < head.Length || !symbols.Take(head.Length).SequenceEqual(head)) return null;
        var alphabet = symbols.Skip(head.Length).ToArray();
        if (alphabet.Any(s => CharTokenizer.CodePoints(s).Count() != 1)
            || !alphabet.SequenceEqual(alphabet.Distinct().Order(StringComparer.Ordinal))) return null;
        return new CharTokenizer(alphabet);
    }

    private static string? Text(JsonNode? node) => node is JsonValue v && v.TryGetValue(out string? s) ? s : null;
}
