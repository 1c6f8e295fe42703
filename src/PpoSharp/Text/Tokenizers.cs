using System.Text.Json;

namespace PpoSharp.Text;

/// <summary>Saving and loading the tokenizer of a run directory (<c>tokenizer.json</c>).</summary>
public static class Tokenizers
{
    public const string FileName = "tokenizer.json";

    public static ITokenizer FromSpec(TokenizerSpec spec, string source) => spec.Type switch
    {
        "char" when spec.Alphabet != null => new CharTokenizer(CharTokenizer.CodePoints(spec.Alphabet)),
        "gpt2" => new Gpt2Tokenizer(),
        _ => throw new PpoSharpException($"{source}: unknown tokenizer type '{spec.Type}' (allowed: char with an alphabet, gpt2)"),
    };

    public static void Save(ITokenizer tokenizer, string directory) =>
        File.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(tokenizer.Spec, Json.Options));

    public static ITokenizer Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new PpoSharpException($"{path}: missing (not a PpoSharp run directory?)");
        TokenizerSpec? spec;
        try { spec = JsonSerializer.Deserialize<TokenizerSpec>(File.ReadAllText(path), Json.Options); }
        catch (JsonException e) { throw new PpoSharpException($"{path}: not a valid tokenizer file ({e.Message})"); }
        return FromSpec(spec ?? throw new PpoSharpException($"{path}: empty tokenizer file"), path);
    }
}
