using System.Text.Json;

namespace PpoSharp.Training;

/// <summary>
/// What an online run's metrics say went wrong, in words a user acts on: over-optimisation (the proxy reward rose while
/// the gold rule's fell) and responses losing their end token. Each compares the mean of the first 10 % of iterations
/// with the last 10 %. The trainer prints them after its summary; the report shows them above the plots.
/// </summary>
public static class RunWarnings
{
    /// <summary>The gold must fall by more than this (its own units) to count.</summary>
    public const double GoldDrop = 0.01;
    /// <summary>eos_rate must fall by more than this to count.</summary>
    public const double EosDrop = 0.1;

    public static List<string> Of(IReadOnlyList<Dictionary<string, JsonElement>> rows)
    {
        var warnings = new List<string>();
        var proxyKey = rows.Any(r => r.ContainsKey("proxy_score_mean")) ? "proxy_score_mean" : "reward_mean";
        if (Trend(rows, proxyKey) is var (p0, p1) && Trend(rows, "gold_reward_mean") is var (g0, g1) && p1 > p0 && g1 < g0 - GoldDrop)
            warnings.Add($"over-optimisation: the proxy reward ({proxyKey}) rose {p0:F3} -> {p1:F3} while the gold reward fell {g0:F3} -> {g1:F3} " +
                "(first 10% of iterations -> last 10%); the policy exploits the reward model: take best/ (kept by the gold with --eval), raise kl_coef or kl_target's strictness, or train a better reward model");
        if (Trend(rows, "eos_rate") is var (e0, e1) && e1 < e0 - EosDrop)
            warnings.Add($"responses are losing their end token: eos_rate {e0:F2} -> {e1:F2}; they run to the length cap (set missing_eos_penalty)");
        return warnings;
    }

    /// <summary>Means of a key over the first and the last 10% of the rows that have it; null with fewer than two such rows.</summary>
    private static (double First, double Last)? Trend(IReadOnlyList<Dictionary<string, JsonElement>> rows, string key)
    {
        var values = rows.Where(r => r.TryGetValue(key, out var v) && v.ValueKind == JsonValueKind.Number && double.IsFinite(v.GetDouble()))
            .Select(r => r[key].GetDouble()).ToList();
        if (values.Count < 2) return null;
        int k = Math.Max(1, values.Count / 10);
        return (values.Take(k).Average(), values.TakeLast(k).Average());
    }
}
