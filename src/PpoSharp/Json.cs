using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PpoSharp;

/// <summary>The one set of JSON options of the project: snake_case keys and enum values, unknown keys rejected.</summary>
public static class Json
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) },
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Single-line output for JSON Lines files and one-object command output.</summary>
    public static readonly JsonSerializerOptions Compact = new(Options) { WriteIndented = false };

    /// <summary>A JSON file as <typeparamref name="T"/>; null when there is no file; one line naming the file when it is corrupt or empty.</summary>
    public static T? ReadFile<T>(string path) where T : class
    {
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Options) ?? throw new PpoSharpException($"{path}: empty"); }
        catch (JsonException e) { throw new PpoSharpException($"{path}: corrupt ({e.Message.Split(". ")[0]})"); }
    }

    /// <summary>Writes <paramref name="value"/> to <paramref name="path"/> atomically (<see cref="AtomicFile"/>).</summary>
    public static void WriteFile<T>(string path, T value) => AtomicFile.WriteText(path, JsonSerializer.Serialize(value, Options));
}
