using System.Globalization;

namespace PpoSharp.Rewards;

/// <summary>A weighted sum of reward functions: score = sum_i w_i * f_i.</summary>
public sealed class CompositeReward(IReadOnlyList<(IRewardFunction Function, double Weight)> parts) : IRewardFunction
{
    public IReadOnlyList<(IRewardFunction Function, double Weight)> Parts { get; } = parts;
    public string Name => string.Join(",", Parts.Select(p => p.Weight == 1 ? p.Function.Name : $"{p.Function.Name}:{p.Weight.ToString(CultureInfo.InvariantCulture)}"));

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch)
    {
        var total = new double[batch.Count];
        foreach (var (f, w) in Parts)
        {
            var s = f.Score(batch);
            for (int i = 0; i < total.Length; i++) total[i] += w * s[i];
        }
        return total;
    }
}

/// <summary>Parses <c>--reward SPEC</c>: a comma-separated list of <c>name[:weight]</c>.</summary>
public static class RewardSpec
{
    private static readonly Dictionary<string, Func<IRewardFunction>> Builtins = new()
    {
        ["exact-match"] = () => new ExactMatch(),
        ["edit-distance"] = () => new EditDistance(),
        ["repetition"] = () => new Repetition(),
        ["length"] = () => new LengthReward(),
    };

    public static IReadOnlyCollection<string> Names => Builtins.Keys;

    public static CompositeReward Parse(string spec)
    {
        var parts = new List<(IRewardFunction, double)>();
        foreach (var item in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            var (name, weightText) = item.LastIndexOf(':') is var i and > 0 ? (item[..i], item[(i + 1)..]) : (item, null);
            if (!Builtins.TryGetValue(name, out var make))
                throw new PpoSharpException($"--reward: unknown reward '{name}'; allowed: {string.Join(", ", Builtins.Keys)}");
            double weight = 1;
            if (weightText != null && (!double.TryParse(weightText, NumberStyles.Float, CultureInfo.InvariantCulture, out weight) || !double.IsFinite(weight)))
                throw new PpoSharpException($"--reward: weight '{weightText}' of '{name}' is not a number");
            parts.Add((make(), weight));
        }
        return new CompositeReward(parts);
    }
}
