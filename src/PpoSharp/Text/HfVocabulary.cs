using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Text;

/// <summary>
/// What <see cref="HfTokenizer"/> reads from a Hugging Face <c>tokenizer.json</c> itself: the id range, the special
/// added tokens (<c>"special": true</c>) and token-to-id lookups for the special-token strings of the config files.
/// It also writes the "plain" copy that the native library loads for <c>add_special_tokens=False</c> encoding.
/// </summary>
internal sealed class HfVocabulary
{
    private readonly JsonObject _root;
    private readonly string _path;
    private readonly Dictionary<string, int> _added = new(StringComparer.Ordinal);

    private HfVocabulary(JsonObject root, string path)
    {
        _root = root;
        _path = path;
        var special = new Dictionary<int, string>();
        int max = MaxModelId();
        if (max >= Models.DecoderSpec.MaxVocab) throw Bad($"the model's vocabulary has id {max}, beyond {Models.DecoderSpec.MaxVocab - 1}");
        foreach (var token in AddedTokens())
        {
            int id = token["id"]?.GetValue<int>() ?? throw Bad("an added token without an id");
            if (id < 0 || id >= Models.DecoderSpec.MaxVocab) throw Bad($"added token id {id} is outside [0, {Models.DecoderSpec.MaxVocab})");
            string content = token["content"]?.GetValue<string>() ?? throw Bad($"added token {id} without content");
            _added.TryAdd(content, id);
            if (token["special"]?.GetValue<bool>() == true) special[id] = content;
            max = Math.Max(max, id);
        }
        Size = max + 1;
        SpecialById = special;
    }

    /// <summary>Highest id of the model's vocabulary and the added tokens, plus one.</summary>
    public int Size { get; }

    /// <summary>Added tokens marked special, by id: the ones decoding skips unless asked to keep them.</summary>
    public IReadOnlyDictionary<int, string> SpecialById { get; }

    public static HfVocabulary Read(string path)
    {
        try
        {
            using var stream = SafeFile.Open(path, SafeFile.TokenizerMax);
            var root = JsonNode.Parse(stream) as JsonObject
                ?? throw new PpoSharpException($"{path}: not a JSON object");
            return new HfVocabulary(root, path);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new PpoSharpException($"{path}: not a valid tokenizer.json ({FirstLine(e.Message)})");
        }
    }

    /// <summary>The id of a token string: an added token, else an entry of the model's vocabulary, else null.</summary>
    public int? IdOf(string token)
    {
        if (_added.TryGetValue(token, out var id)) return id;
        return _root["model"]?["vocab"] switch
        {
            JsonObject map when map[token] is JsonValue v => v.GetValue<int>(),
            JsonArray list => IndexInUnigram(list, token),
            _ => null,
        };
    }

    /// <summary>
    /// Writes a copy without a post-processor (so encoding adds no BOS/EOS, as <c>add_special_tokens=False</c>) and with
    /// every added token unmarked as special (so the library's decode, which always skips special tokens, keeps them;
    /// <see cref="HfTokenizer"/> drops the special ids itself when asked to). Neither change affects how text is split.
    /// </summary>
    public void WritePlainCopy(string path)
    {
        _root["post_processor"] = null;                 // edited in place: lookups and the id range do not depend on these
        foreach (var token in AddedTokens()) token["special"] = false;
        using var stream = File.Create(path);
        using var writer = new Utf8JsonWriter(stream);
        _root.WriteTo(writer);
    }

    internal static string FirstLine(string message) => message.Split('\n')[0].Trim();

    private IEnumerable<JsonObject> AddedTokens() => (_root["added_tokens"] as JsonArray ?? []).OfType<JsonObject>();

    private int MaxModelId() => _root["model"]?["vocab"] switch
    {
        JsonObject map => map.Select(p => p.Value?.GetValue<int>() is int id && id >= 0 ? id : throw Bad($"vocabulary entry '{p.Key}' has no id >= 0")).DefaultIfEmpty(-1).Max(),
        JsonArray list => list.Count - 1,
        _ => -1,
    };

    private static int? IndexInUnigram(JsonArray list, string token)
    {
        for (int i = 0; i < list.Count; i++)
            if (list[i] is JsonArray entry && entry.Count > 0 && entry[0]?.GetValue<string>() == token) return i;
        return null;
    }

    private PpoSharpException Bad(string problem) => new($"{_path}: {problem}");
}
