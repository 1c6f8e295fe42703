using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Text;

/// <summary>
/// The optional JSON files beside a Hugging Face <c>tokenizer.json</c> (<c>tokenizer_config.json</c>,
/// <c>generation_config.json</c>, <c>config.json</c>, <c>chat_template.jinja</c>) and what transformers and TRL take from
/// them: special-token strings, EOS/pad/BOS ids, the decode clean-up flag and the chat template.
/// </summary>
internal sealed class HfConfigFiles
{
    public const string TokenizerConfig = "tokenizer_config.json";
    public const string GenerationConfig = "generation_config.json";
    public const string ModelConfig = "config.json";
    public const string ChatTemplateFile = "chat_template.jinja";

    private readonly string _dir;
    private readonly JsonObject _tokenizer;
    private readonly JsonObject _generation;
    private readonly JsonObject _model;

    private HfConfigFiles(string dir)
    {
        _dir = dir;
        _tokenizer = ReadOptional(TokenizerConfig);
        _generation = ReadOptional(GenerationConfig);
        _model = ReadOptional(ModelConfig);
    }

    public static HfConfigFiles Read(string dir) => new(dir);

    /// <summary>
    /// Every <c>*_token</c> key of <c>tokenizer_config.json</c> whose value is a string (or an object with a
    /// <c>content</c>), as transformers passes them to chat templates; keys with null values are left out.
    /// </summary>
    public IReadOnlyDictionary<string, string> SpecialTokenStrings() =>
        _tokenizer.Where(p => p.Key.EndsWith("_token", StringComparison.Ordinal) && TokenString(p.Value) != null)
            .ToDictionary(p => p.Key, p => TokenString(p.Value)!, StringComparer.Ordinal);

    /// <summary>transformers' <c>clean_up_tokenization_spaces</c>; absent means false (its default since 4.45).</summary>
    public bool CleanUpTokenizationSpaces => _tokenizer["clean_up_tokenization_spaces"] is JsonValue v
        && v.TryGetValue<bool>(out var b) && b;

    /// <summary>The file the chat template comes from (for messages about it).</summary>
    public string ChatTemplateSource => Path.Combine(_dir, SafeFile.Present(Path.Combine(_dir, ChatTemplateFile)) ? ChatTemplateFile : TokenizerConfig);

    /// <summary>The chat template: <c>chat_template.jinja</c> if present, else <c>tokenizer_config.json</c>'s (the "default" one of a list), else null.</summary>
    public string? ChatTemplate()
    {
        var file = Path.Combine(_dir, ChatTemplateFile);
        if (SafeFile.Present(file)) return SafeFile.ReadText(file, SafeFile.TemplateMax);
        return _tokenizer["chat_template"] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            JsonArray list => NamedTemplate(list, "default"),
            _ => throw Bad(TokenizerConfig, "chat_template must be a string or a list of {name, template}"),
        };
    }

    /// <summary>
    /// EOS ids: <c>generation_config.json</c>'s <c>eos_token_id</c> (an id or a list), else <c>config.json</c>'s,
    /// else the id of <c>tokenizer_config.json</c>'s <c>eos_token</c>.
    /// </summary>
    public IReadOnlyList<int> EosIds(HfVocabulary vocab)
    {
        var ids = IdList(_generation, GenerationConfig, "eos_token_id", vocab) ?? IdList(_model, ModelConfig, "eos_token_id", vocab);
        if (ids is { Count: > 0 }) return ids;
        if (TokenId(vocab, "eos_token") is int eos) return [eos];
        throw new PpoSharpException($"{_dir}: no EOS token (none of {GenerationConfig} eos_token_id, {ModelConfig} eos_token_id, {TokenizerConfig} eos_token)");
    }

    /// <summary>
    /// The pad id: <c>pad_token</c>, else <c>config.json</c>'s <c>pad_token_id</c>, else what TRL pads with when a
    /// tokenizer has no pad token (its <c>eos_token</c>), else the first EOS id.
    /// </summary>
    public int PadId(HfVocabulary vocab, IReadOnlyList<int> eos) =>
        TokenId(vocab, "pad_token") ?? IdList(_model, ModelConfig, "pad_token_id", vocab)?.FirstOrDefault() ?? TokenId(vocab, "eos_token") ?? eos[0];

    /// <summary>The BOS id: <c>bos_token</c>, else <c>config.json</c>'s <c>bos_token_id</c>, else null.</summary>
    public int? BosId(HfVocabulary vocab) => TokenId(vocab, "bos_token") ?? IdList(_model, ModelConfig, "bos_token_id", vocab)?.FirstOrDefault();

    private int? TokenId(HfVocabulary vocab, string key)
    {
        if (TokenString(_tokenizer[key]) is not string token) return null;
        return vocab.IdOf(token) ?? throw Bad(TokenizerConfig, $"{key} '{token}' is not a token of tokenizer.json");
    }

    private static string? TokenString(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonObject o when o["content"] is JsonValue c && c.TryGetValue<string>(out var s) => s,
        _ => null,
    };

    /// <summary>
    /// An id or list of ids under <paramref name="key"/> (top level, else in a multimodal model's text_config), each within
    /// the vocabulary; null when absent.
    /// </summary>
    private List<int>? IdList(JsonObject file, string name, string key, HfVocabulary vocab)
    {
        var node = file[key] ?? file["text_config"]?[key];
        List<int>? ids;
        try
        {
            ids = node switch
            {
                null => null,
                JsonArray list => list.Select(x => x!.GetValue<int>()).ToList(),
                _ => [node.GetValue<int>()],
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw Bad(name, $"{key} must be a token id or a list of token ids");
        }
        foreach (var id in ids ?? [])
            if (id < 0 || id >= vocab.Size) throw Bad(name, $"{key} {id} is outside the vocabulary (0 .. {vocab.Size - 1})");
        return ids;
    }

    private string NamedTemplate(JsonArray list, string name)
    {
        var names = list.OfType<JsonObject>().Select(o => o["name"]?.ToString() ?? "").ToList();
        if (names.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw Bad(TokenizerConfig, $"chat_template lists two templates named '{twice.Key}'");
        var named = list.OfType<JsonObject>().ToDictionary(o => o["name"]?.ToString() ?? "", o => o["template"]?.ToString());
        return named.GetValueOrDefault(name) ?? throw Bad(TokenizerConfig,
            $"chat_template lists templates ({string.Join(", ", named.Keys)}) but none named '{name}' with a template");
    }

    private JsonObject ReadOptional(string name)
    {
        var path = Path.Combine(_dir, name);
        if (!SafeFile.Present(path)) return [];
        try
        {
            return JsonNode.Parse(SafeFile.ReadText(path, name == TokenizerConfig ? SafeFile.TokenizerConfigMax : SafeFile.ConfigMax)) as JsonObject ?? throw Bad(name, "not a JSON object");
        }
        catch (JsonException e)
        {
            throw Bad(name, $"not valid JSON ({HfVocabulary.FirstLine(e.Message)})");
        }
    }

    private PpoSharpException Bad(string name, string problem) => new($"{Path.Combine(_dir, name)}: {problem}");
}
