using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Models.Hf;

/// <summary>Typed reads of a Hugging Face <c>config.json</c>; a missing or mistyped key is an error naming the file and the key.</summary>
public sealed class HfConfig(JsonObject json, string path)
{
    public JsonObject Json => json;
    public string Path => path;

    public static HfConfig Read(string dir, string file = "config.json")
    {
        if (File.Exists(dir)) throw new PpoSharpException($"{dir}: is a file; a model is a directory (config.json, weights, tokenizer)");
        if (!Directory.Exists(dir)) throw new PpoSharpException($"{dir}: model directory not found");
        SafeFile.CheckFolder(dir);
        var path = System.IO.Path.Combine(dir, file);
        if (!SafeFile.Present(path)) throw new PpoSharpException($"{path}: missing (a model directory needs {file}){NearestModel(dir, file)}");
        try
        {
            return JsonNode.Parse(SafeFile.ReadText(path, SafeFile.ConfigMax)) is JsonObject o ? new HfConfig(o, path)
                : throw new PpoSharpException($"{path}: must be a JSON object");
        }
        catch (JsonException e) { throw new PpoSharpException($"{path}: invalid JSON ({e.Message.Split(". ")[0]})"); }
    }

    /// <summary>
    /// Where to look instead when <paramref name="dir"/> is no model folder: for a training checkpoint
    /// (<c>RUN/checkpoints/step-N</c>: weights under the module's own names, optimizer state, no config or tokenizer) its
    /// run folder; else the nearest folder above that holds <paramref name="file"/>; else nothing.
    /// </summary>
    private static string NearestModel(string dir, string file)
    {
        var full = new DirectoryInfo(System.IO.Path.GetFullPath(dir));
        if (full.Parent is { Name: "checkpoints", Parent: { } run } && full.Name.StartsWith("step-", StringComparison.Ordinal) && !File.Exists(System.IO.Path.Combine(run.FullName, file)))
            return $"; it is a training checkpoint of the run {run.FullName}, which has no final model yet (its config.json and tokenizer.json, which a checkpoint loads with): finish the run with --resume";
        for (var up = full.Parent; up is not null; up = up.Parent)
            if (File.Exists(System.IO.Path.Combine(up.FullName, file)))
                return full.Parent?.Name == "checkpoints" && full.Parent.Parent?.FullName == up.FullName
                    ? $"; it is a training checkpoint of the run {up.FullName}, which holds the final model: load that folder"
                    : $"; the nearest model folder above it is {up.FullName}";
        return "";
    }

    public bool Has(string key) => json[key] is not null;

    public int Int(string key, int? fallback = null) => Get(key, n => n.GetValue<int>(), "an integer", fallback.HasValue ? () => fallback.Value : null);

    public double Double(string key, double? fallback = null) => Get(key, n => n.GetValue<double>(), "a number", fallback.HasValue ? () => fallback.Value : null);

    public bool Bool(string key, bool? fallback = null) => Get(key, n => n.GetValue<bool>(), "true or false", fallback.HasValue ? () => fallback.Value : null);

    public string String(string key, string? fallback = null) => Get(key, n => n.GetValue<string>(), "a string", fallback is null ? null : () => fallback);

    /// <summary>The first entry of <c>architectures</c>.</summary>
    public string Architecture()
    {
        if (json["architectures"] is JsonArray { Count: > 0 } a && a[0] is JsonValue v && v.TryGetValue<string>(out var name)) return name;
        throw new PpoSharpException($"{path}: missing 'architectures' (the model class, e.g. [\"LlamaForCausalLM\"])");
    }

    public JsonObject? Object(string key) => json[key] as JsonObject;

    /// <summary>The value of <paramref name="key"/> (null counts as absent), else the fallback, else an error naming the key.</summary>
    private T Get<T>(string key, Func<JsonNode, T> read, string what, Func<T>? fallback)
    {
        var node = json[key];
        if (node is null) return fallback is null ? throw new PpoSharpException($"{path}: missing key '{key}'") : fallback();
        try { return read(node); }
        catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new PpoSharpException($"{path}: '{key}' must be {what}"); }
    }
}
