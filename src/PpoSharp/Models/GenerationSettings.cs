using System.Text.Json.Nodes;

namespace PpoSharp.Models;

/// <summary>
/// How <c>generate</c> decodes, chosen as transformers' <c>generate()</c> chooses: from the model folder's
/// <c>generation_config.json</c> (<c>do_sample</c>, <c>temperature</c>, <c>top_k</c>, <c>top_p</c>, with transformers'
/// defaults 1.0, 50 and 1.0 for what it leaves out), unless flags say otherwise: <c>--greedy</c>, or any of
/// <c>--temperature</c> (0 is greedy), <c>--top-k</c>, <c>--top-p</c>, which sample with the rest taken from the file.
/// Without a file, or with <c>do_sample</c> false, decoding is greedy.
/// </summary>
/// <param name="DoSample">Sample (true) or decode greedily.</param>
/// <param name="Temperature">Sampling temperature.</param>
/// <param name="TopK">Sample from the k most likely tokens; 0 = all.</param>
/// <param name="TopP">Nucleus threshold.</param>
/// <param name="Source">Where the settings came from: generation_config.json, flags, or default (greedy).</param>
public sealed record GenerationSettings(bool DoSample, double Temperature, int TopK, double TopP, string Source)
{
    public const string FileName = "generation_config.json";

    /// <summary>The settings for <paramref name="modelDir"/> and the flags given (null: not given).</summary>
    public static GenerationSettings Resolve(string modelDir, bool greedy, double? temperature, int? topK, double? topP)
    {
        var file = Read(Path.Combine(modelDir, FileName));
        double fileT = Number(file, "temperature") ?? 1.0, fileP = Number(file, "top_p") ?? 1.0;
        int fileK = (int)(Number(file, "top_k") ?? 50);
        bool fileSamples = file?["do_sample"] is JsonValue v && v.TryGetValue(out bool b) && b;
        if (greedy) return new(false, 1.0, 0, 1.0, "flags");
        if (temperature is not null || topK is not null || topP is not null)
        {
            if (temperature == 0) return new(false, 1.0, 0, 1.0, "flags");
            return fileSamples ? new(true, temperature ?? fileT, topK ?? fileK, topP ?? fileP, "flags")
                : new(true, temperature ?? 1.0, topK ?? 0, topP ?? 1.0, "flags");
        }
        return fileSamples ? new(true, fileT, fileK, fileP, FileName) : new(false, 1.0, 0, 1.0, file is null ? "default" : FileName);
    }

    /// <summary>The sampling options of these settings.</summary>
    public SamplingOptions Options(int maxNewTokens) => new(maxNewTokens, Temperature, TopK, TopP, Greedy: !DoSample);

    private static JsonObject? Read(string path)
    {
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PpoSharpException($"{path}: not a JSON object"); }
        catch (System.Text.Json.JsonException e) { throw new PpoSharpException($"{path}: invalid JSON ({e.Message.Split(". ")[0]})"); }
    }

    private static double? Number(JsonObject? o, string key) =>
        o?[key] is JsonValue v && v.TryGetValue(out double d) ? d : o?[key] is null ? null
            : throw new PpoSharpException($"{FileName}: '{key}' must be a number");
}
