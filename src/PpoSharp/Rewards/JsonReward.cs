using System.Text.Json;

namespace PpoSharp.Rewards;

/// <summary>
/// <c>json</c>: 1 when the completion (trimmed; or the inside of a ```json fence) parses as JSON and, when the record
/// has a <c>solution</c>, is an object holding every key the label lists (a JSON array of names, or names separated by
/// commas); else 0.
/// </summary>
public sealed class JsonReward : IRewardFunction
{
    public string Name => "json";

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batch.Select(x =>
        x.Solutions.Count == 0 ? (Parse(x.Response) is null ? 0.0 : 1.0) : x.Solutions.Max(s => ScoreOne(x.Response, s))).ToArray();

    private static double ScoreOne(string response, string label)
    {
        using var doc = Parse(response);
        if (doc is null) return 0;
        var keys = Keys(label);
        if (keys.Count == 0) return 1;
        return doc.RootElement.ValueKind == JsonValueKind.Object && keys.All(k => doc.RootElement.TryGetProperty(k, out _)) ? 1 : 0;
    }

    /// <summary>The key names a label lists: a JSON array of strings, else comma-separated names.</summary>
    public static IReadOnlyList<string> Keys(string label)
    {
        var t = label.Trim();
        if (t.StartsWith('['))
        {
            try { return JsonSerializer.Deserialize<string[]>(t) ?? []; }
            catch (JsonException) { }
        }
        return t.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
    }

    private static JsonDocument? Parse(string response)
    {
        var t = response.Trim();
        int fence = t.IndexOf("```json", StringComparison.Ordinal);
        if (fence >= 0)
        {
            int end = t.IndexOf("```", fence + 7, StringComparison.Ordinal);
            t = (end < 0 ? t[(fence + 7)..] : t[(fence + 7)..end]).Trim();
        }
        if (t.Length == 0) return null;
        try { return JsonDocument.Parse(t, new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException) { return null; }
    }
}
