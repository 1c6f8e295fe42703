using System.Globalization;

namespace PpoSharp.Rewards;

/// <summary>A weighted sum of reward functions: score = sum_i w_i * f_i.</summary>
public sealed class CompositeReward(IReadOnlyList<(IRewardFunction Function, double Weight)> parts) : IRewardFunction
{
    public IReadOnlyList<(IRewardFunction Function, double Weight)> Parts { get; } = parts;
    public string Name => string.Join(",", Parts.Select(p => p.Weight == 1 ? p.Function.Name : $"{p.Function.Name}:{p.Weight.ToString(CultureInfo.InvariantCulture)}"));

    public string? NeedsSolution => Parts.Select(p => p.Function.NeedsSolution).FirstOrDefault(n => n is not null);

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => ScoreParts(batch).Total;

    /// <summary>
    /// The weighted sum per input, and each function's own scores by name (a name given twice gets <c>#2</c>, <c>#3</c>):
    /// what the trainers log per function.
    /// </summary>
    public (double[] Total, Dictionary<string, double[]> Parts) ScoreParts(IReadOnlyList<RewardInput> batch)
    {
        var total = new double[batch.Count];
        var parts = new Dictionary<string, double[]>();
        foreach (var (f, w) in Parts)
        {
            var s = f.Score(batch).ToArray();
            for (int i = 0; i < total.Length; i++) total[i] += w * s[i];
            var name = f.Name;
            for (int k = 2; parts.ContainsKey(name); k++) name = $"{f.Name}#{k}";
            parts[name] = s;
        }
        return (total, parts);
    }
}

/// <summary>Parses <c>--reward SPEC</c> (and <c>--gold SPEC</c>): a comma-separated list of <c>name[:weight]</c>.</summary>
public static class RewardSpec
{
    /// <summary>Whether a reward is or holds a reward model (<c>model:DIR</c>), whose scores can be over-optimised.</summary>
    public static bool HasModel(IRewardFunction reward) => Functions(reward).Any(f => f is RewardModelScorer);

    /// <summary>The functions a reward is made of: a sum's parts, else the reward itself.</summary>
    public static IEnumerable<IRewardFunction> Functions(IRewardFunction reward) =>
        reward is CompositeReward c ? c.Parts.Select(p => p.Function) : [reward];

    private static readonly Dictionary<string, Func<IRewardFunction>> Builtins = new()
    {
        ["exact-match"] = () => new ExactMatch(),
        ["edit-distance"] = () => new EditDistance(),
        ["repetition"] = () => new Repetition(),
        ["length"] = () => new LengthReward(),
    };

    public static IReadOnlyCollection<string> Names => Builtins.Keys;

    /// <summary>
    /// Parses SPEC. <c>model:DIR</c> loads a reward model (a weight may follow the directory: <c>model:runs/rm:0.5</c>).
    /// Errors name <paramref name="option"/>, the command-line option the spec came from.
    /// </summary>
    public static CompositeReward Parse(string spec, string option = "--reward")
    {
        var parts = new List<(IRewardFunction, double)>();
        foreach (var item in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            var (name, weight) = SplitWeight(item, option);
            if (IsUrl(name))
            {
                parts.Add((new RemoteReward(name.Split('+', StringSplitOptions.TrimEntries)), weight));
                continue;
            }
            if (name.StartsWith("model:", StringComparison.Ordinal))
            {
                if (name.Length == "model:".Length) throw new PpoSharpException($"{option}: 'model:' needs a reward-model directory, as in model:runs/rm");
                parts.Add((RewardModelScorer.Load(name["model:".Length..]), weight));
                continue;
            }
            if (!Builtins.TryGetValue(name, out var make))
                throw new PpoSharpException($"{option}: unknown reward '{name}'; allowed: {string.Join(", ", Builtins.Keys)}, model:DIR, http://HOST:PORT/PATH");
            parts.Add((make(), weight));
        }
        return new CompositeReward(parts);
    }

    /// <summary>The reward-model folders that SPEC names (its <c>model:DIR</c> parts), without loading them.</summary>
    public static IEnumerable<string> ModelDirs(string spec) => spec.Split(',', StringSplitOptions.TrimEntries)
        .Select(item => SplitWeight(item, "--reward").Name).Where(n => n.StartsWith("model:", StringComparison.Ordinal) && n.Length > "model:".Length)
        .Select(n => n["model:".Length..]);

    private static bool IsUrl(string item) => item.StartsWith("http://", StringComparison.Ordinal) || item.StartsWith("https://", StringComparison.Ordinal);

    /// <summary>
    /// "name:weight" -> (name, weight); a model path keeps its colons unless a number follows the last one; a URL's weight
    /// is a colon after its path (http://host:8000/get_reward:0.5), so its port is never read as one.
    /// </summary>
    private static (string Name, double Weight) SplitWeight(string item, string option)
    {
        int i = item.LastIndexOf(':');
        if (IsUrl(item))
        {
            var last = item[(item.LastIndexOf('+') + 1)..];                       // the last of several shard URLs
            int slash = last.IndexOf('/', last.IndexOf("://", StringComparison.Ordinal) + 3);
            if (slash < 0 || last.LastIndexOf(':') < slash) return (item, 1);
        }
        if (i <= 0) return (item, 1);
        var suffix = item[(i + 1)..];
        if (double.TryParse(suffix, NumberStyles.Float, CultureInfo.InvariantCulture, out var w) && double.IsFinite(w)) return (item[..i], w);
        if (item.StartsWith("model:", StringComparison.Ordinal)) return (item, 1);
        throw new PpoSharpException($"{option}: weight '{suffix}' of '{item[..i]}' is not a number");
    }
}
