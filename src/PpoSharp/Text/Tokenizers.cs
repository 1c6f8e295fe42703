using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Text;

/// <summary>What a built-in tokenizer's <c>tokenizer.json</c> holds: the kind and, for the character tokenizer, its alphabet.</summary>
public sealed record TokenizerSpec(string Type, string? Alphabet = null);

/// <summary>Saving and loading the tokenizer of a model directory (<c>tokenizer.json</c>).</summary>
public static class Tokenizers
{
    public const string FileName = "tokenizer.json";

    /// <summary>
    /// Plain text to ids as transformers' <c>tokenizer(text)</c> gives them: with a Hugging Face tokenizer's post-processing
    /// (its BOS), and the character tokenizer's role-token strings as role tokens, as its saved tokenizer.json gives them;
    /// a built-in tokenizer adds nothing.
    /// </summary>
    public static IReadOnlyList<int> EncodeText(ITokenizer tokenizer, string text) => tokenizer switch
    {
        HfTokenizer hf => hf.EncodeWithSpecialTokens(text),
        CharTokenizer c => c.EncodeWithRoleTokens(text),
        _ => tokenizer.Encode(text),
    };

    public static ITokenizer FromSpec(TokenizerSpec spec, string source) => spec.Type switch
    {
        "char" when spec.Alphabet != null => new CharTokenizer(CharTokenizer.CodePoints(spec.Alphabet)),
        "gpt2" => new Gpt2Tokenizer(),
        _ => throw new PpoSharpException($"{source}: unknown tokenizer type '{spec.Type}' (allowed: char with an alphabet, gpt2)"),
    };

    /// <summary>
    /// Whether the tokenizer is a built-in one (characters, or GPT-2 with role tokens), i.e. the model is a built-in model:
    /// its reward and value heads are then the notes' MLP; pretrained models get Hugging Face's linear <c>score</c> head.
    /// </summary>
    public static bool IsBuiltIn(ITokenizer tokenizer) => tokenizer is CharTokenizer or Gpt2Tokenizer;

    /// <summary>Whether a model directory's tokenizer is a Hugging Face one (a pretrained model); false for built-in runs and for a missing directory.</summary>
    public static bool IsPretrained(string? directory)
    {
        if (directory is not null && Training.RunDirectory.CheckpointRun(directory) is string run) directory = run;    // a checkpoint: its run's tokenizer
        var path = directory is null ? null : Path.Combine(directory, FileName);
        try { return path is not null && File.Exists(path) && Read(path).HuggingFace; }
        catch (Exception e) when (e is JsonException or PpoSharpException) { return false; }   // reported when the model loads
    }

    /// <summary>A tokenizer.json's bytes, and what they hold: the character tokenizer (read), another Hugging Face tokenizer, or neither (a built-in spec).</summary>
    private readonly record struct TokenizerFile(byte[] Bytes, bool HuggingFace, CharTokenizer? Char);

    /// <summary>
    /// A Hugging Face tokenizer.json has a top-level "model" section; a built-in tokenizer's spec does not. A WordLevel
    /// model in the character tokenizer's form is the character tokenizer. Read with a forward-only reader that skips
    /// each value (these files reach tens of MB; the tokenizer library parses them anyway).
    /// </summary>
    private static TokenizerFile Read(string path)
    {
        var bytes = SafeFile.ReadBytes(path, SafeFile.TokenizerMax);
        var reader = new Utf8JsonReader(bytes);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return new(bytes, false, null);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("model"))
            {
                var chars = IsWordLevel(ref reader) ? ReadChar(bytes) : null;
                return new(bytes, chars is null, chars);
            }
            reader.Skip();                                         // the property's value
        }
        return new(bytes, false, null);
    }

    /// <summary>Whether the "model" object the reader is at has "type": "WordLevel" (HF writes "type" first).</summary>
    private static bool IsWordLevel(ref Utf8JsonReader reader)
    {
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("type")) return reader.Read() && reader.ValueTextEquals("WordLevel");
            reader.Skip();
        }
        return false;
    }

    private static CharTokenizer? ReadChar(byte[] bytes) =>
        JsonNode.Parse(bytes) is JsonObject root ? CharTokenizerFiles.TryRead(root) : null;

    public static void SaveSpec(TokenizerSpec spec, string directory) =>
        File.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(spec, Json.Options));

    /// <summary>
    /// The tokenizer of a model directory: the character tokenizer's WordLevel <c>tokenizer.json</c>; another Hugging Face
    /// <c>tokenizer.json</c> (it has a "model" section) through <see cref="HfTokenizer"/>, with <paramref name="chatKwargs"/>
    /// for its chat template; else a built-in tokenizer's spec (<c>{"type": "char"}</c> of older runs, <c>gpt2</c>).
    /// </summary>
    public static ITokenizer Load(string directory, IReadOnlyDictionary<string, object?>? chatKwargs = null)
    {
        var path = Path.Combine(directory, FileName);
        if (!SafeFile.Present(path)) throw new PpoSharpException($"{path}: missing (a model directory needs its tokenizer)");
        try
        {
            var file = Read(path);
            if (file.Char is not null) return file.Char;
            if (file.HuggingFace) return HfTokenizer.Load(directory, chatKwargs);
            var spec = JsonSerializer.Deserialize<TokenizerSpec>(file.Bytes, Json.Options);
            return FromSpec(spec ?? throw new PpoSharpException($"{path}: empty tokenizer file"), path);
        }
        catch (JsonException e) { throw new PpoSharpException($"{path}: not a valid tokenizer file ({e.Message.Split(". ")[0]})"); }
    }
}
