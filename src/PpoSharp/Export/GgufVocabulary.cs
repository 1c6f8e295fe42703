using System.Text;
using System.Text.Json.Nodes;
using PpoSharp.Text;

namespace PpoSharp.Export;

/// <summary>
/// The <c>tokenizer.*</c> metadata of a GGUF file, with the names and conventions of gguf-py (constants.py) and
/// convert_hf_to_gguf.py's <c>get_vocab_base</c>: byte-level BPE (<c>tokenizer.ggml.model</c> = "gpt2") with tokens,
/// token types, merges, the pre-tokenizer's name, special ids and the chat template; or "none" with the vocabulary size
/// alone for a model folder that has no tokenizer (llama.cpp then adds that many dummy tokens and runs on token ids).
/// </summary>
public static class GgufVocabulary
{
    // gguf-py's TokenType
    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5;

    /// <summary>
    /// The pre-tokenizer regexes of tokenizer.json that llama.cpp knows by name (its LLAMA_VOCAB_PRE_TYPE table; the
    /// converter finds them by hashing a test text's tokens, this looks at the pattern itself).
    /// </summary>
    private static readonly Dictionary<string, string> PreByRegex = new(StringComparer.Ordinal)
    {
        [@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"] = "llama-bpe",
        [@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"] = "qwen2",
    };

    /// <summary>Adds the tokenizer of <paramref name="tokenizer"/> (null: none) for a model of <paramref name="vocabSize"/> embedding rows.</summary>
    public static void Add(GgufWriter w, ITokenizer? tokenizer, int vocabSize, string arch)
    {
        switch (tokenizer)
        {
            case HfTokenizer hf: AddHf(w, hf, vocabSize); break;
            case CharTokenizer c: AddChar(w, c, vocabSize); break;
            default:
                w.Add("tokenizer.ggml.model", "none");
                w.Add($"{arch}.vocab_size", (uint)vocabSize);
                break;
        }
    }

    private static void AddHf(GgufWriter w, HfTokenizer tok, int vocabSize)
    {
        var path = Path.Combine(tok.SourceDirectory, HfTokenizer.TokenizerFile);
        var root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PpoSharpException($"{path}: not a JSON object");
        var model = root["model"] as JsonObject;
        if (model?["type"]?.GetValue<string>() != "BPE" || model["vocab"] is not JsonObject vocab || model["byte_fallback"]?.GetValue<bool>() == true)
            throw new PpoSharpException($"{path}: only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM) can be written to GGUF; this one is {model?["type"]?.GetValue<string>() ?? "unknown"}{(model?["byte_fallback"]?.GetValue<bool>() == true ? " with byte_fallback (SentencePiece-style)" : "")}");
        var tokens = new string?[vocabSize];
        var types = new int[vocabSize];
        foreach (var (text, id) in vocab) Put(id!.GetValue<int>(), text, Normal);
        foreach (var added in (root["added_tokens"] as JsonArray ?? []).OfType<JsonObject>())
            Put(added["id"]!.GetValue<int>(), added["content"]!.GetValue<string>(), added["special"]?.GetValue<bool>() == true ? Control : UserDefined);
        for (int i = 0; i < vocabSize; i++)
            if (tokens[i] is null) { tokens[i] = $"[PAD{i}]"; types[i] = Unused; }          // rows of the embedding table past the tokenizer's ids

        w.Add("tokenizer.ggml.model", "gpt2");
        w.Add("tokenizer.ggml.pre", PreTokenizer(root["pre_tokenizer"], path));
        w.Add("tokenizer.ggml.tokens", tokens!);
        w.Add("tokenizer.ggml.token_type", types);
        w.Add("tokenizer.ggml.merges", Merges(model["merges"]));
        if (tok.Bos is int bos) w.Add("tokenizer.ggml.bos_token_id", (uint)bos);
        w.Add("tokenizer.ggml.eos_token_id", (uint)tok.Special.Eos[0]);
        w.Add("tokenizer.ggml.padding_token_id", (uint)tok.Special.Pad);
        w.Add("tokenizer.ggml.add_bos_token", tok.Bos is int b && tok.EncodeWithSpecialTokens("a") is [var first, ..] && first == b);
        w.Add("tokenizer.ggml.add_eos_token", false);
        if (HfConfigFiles.Read(tok.SourceDirectory).ChatTemplate() is string template) w.Add("tokenizer.chat_template", template);

        void Put(int id, string text, int type)
        {
            if (id < 0 || id >= vocabSize) throw new PpoSharpException($"{path}: token '{text}' has id {id}, outside the model's {vocabSize} embedding rows");
            (tokens[id], types[id]) = (text, type);
        }
    }

    /// <summary>tokenizer.json merges, as "a b" strings (newer files store them as [a, b] pairs).</summary>
    private static List<string> Merges(JsonNode? merges) =>
        (merges as JsonArray ?? []).Select(m => m is JsonArray pair ? $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}" : m!.GetValue<string>()).ToList();

    /// <summary>llama.cpp's name for the pre-tokenizer: a known Split regex, GPT-2's ByteLevel regex, or SmolLM's digits + ByteLevel.</summary>
    private static string PreTokenizer(JsonNode? pre, string path)
    {
        var parts = pre?["type"]?.GetValue<string>() == "Sequence" ? (pre["pretokenizers"] as JsonArray ?? []).OfType<JsonObject>().ToList()
            : pre is JsonObject o ? [o] : [];
        var kinds = parts.Select(p => p["type"]?.GetValue<string>()).ToList();
        if (parts.FirstOrDefault(p => p["type"]?.GetValue<string>() == "Split")?["pattern"]?["Regex"]?.GetValue<string>() is string regex)
            return PreByRegex.TryGetValue(regex, out var name) ? name
                : throw new PpoSharpException($"{path}: the pre-tokenizer regex is not one llama.cpp knows by name (known: Llama 3, Qwen2, GPT-2, SmolLM)");
        if (kinds is ["ByteLevel"] && parts[0]["use_regex"]?.GetValue<bool>() != false) return "gpt-2";
        if (kinds is ["Digits", "ByteLevel"] && parts[0]["individual_digits"]?.GetValue<bool>() == true) return "smollm";
        throw new PpoSharpException($"{path}: pre-tokenizer [{string.Join(", ", kinds)}] is not one llama.cpp knows by name (known: Llama 3, Qwen2, GPT-2, SmolLM)");
    }

    /// <summary>
    /// The built-in character tokenizer as byte-level BPE: each character is a token (its UTF-8 bytes in GPT-2's
    /// byte-to-unicode alphabet), with merges that join the bytes of multi-byte characters; the role tokens are control
    /// tokens, and the chat template writes the built-in role format.
    /// </summary>
    private static void AddChar(GgufWriter w, CharTokenizer tok, int vocabSize)
    {
        var tokens = new string[vocabSize];
        var types = new int[vocabSize];
        var merges = new List<string>();
        for (int id = 0; id < vocabSize; id++)
        {
            var text = id < tok.VocabSize ? tok.Decode([id], skipSpecial: false) : "";
            if (id == CharTokenizer.Unknown) (tokens[id], types[id]) = ("<unk>", Unknown);
            else if (tok.Roles.Contains(id)) (tokens[id], types[id]) = (text, Control);
            else if (id >= tok.VocabSize) (tokens[id], types[id]) = ($"[PAD{id}]", Unused);
            else
            {
                var bytes = Encoding.UTF8.GetBytes(text).Select(ByteToUnicode).ToArray();
                for (int k = 1; k < bytes.Length; k++) merges.Add($"{string.Concat(bytes.Take(k))} {bytes[k]}");
                (tokens[id], types[id]) = (string.Concat(bytes), Normal);
            }
        }
        w.Add("tokenizer.ggml.model", "gpt2");
        w.Add("tokenizer.ggml.pre", "gpt-2");
        w.Add("tokenizer.ggml.tokens", tokens);
        w.Add("tokenizer.ggml.token_type", types);
        w.Add("tokenizer.ggml.merges", merges);
        w.Add("tokenizer.ggml.bos_token_id", (uint)tok.Roles.End);             // like GPT-2, whose BOS is its EOS; never added
        w.Add("tokenizer.ggml.eos_token_id", (uint)tok.Roles.End);
        w.Add("tokenizer.ggml.padding_token_id", (uint)tok.Roles.Pad);
        w.Add("tokenizer.ggml.unknown_token_id", (uint)CharTokenizer.Unknown);
        w.Add("tokenizer.ggml.add_bos_token", false);
        w.Add("tokenizer.ggml.add_eos_token", false);
        w.Add("tokenizer.chat_template", HfTokenizer.RoleFormatTemplate.Replace("eos_token", $"'{SpecialTokens.End}'", StringComparison.Ordinal));
    }

    /// <summary>GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onwards in order.</summary>
    public static string ByteToUnicode(byte b)
    {
        static bool Printable(int c) => c is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
        if (Printable(b)) return ((char)b).ToString();
        int n = 0;
        for (int c = 0; c < b; c++) if (!Printable(c)) n++;
        return ((char)(256 + n)).ToString();
    }
}
