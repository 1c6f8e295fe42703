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

    private static readonly Dictionary<string, Func<RewardOptions, IRewardFunction>> Builtins = new()
    {
        ["exact-match"] = _ => new ExactMatch(),
        ["edit-distance"] = _ => new EditDistance(),
        ["repetition"] = _ => new Repetition(),
        ["length"] = _ => new LengthReward(),
        ["math"] = _ => new MathReward(),
        ["format"] = _ => new FormatReward(),
        ["contains"] = _ => new ContainsReward(),
        ["json"] = _ => new JsonReward(),
        ["overlong"] = o => new OverlongReward(o.MaxCompletionLength, o.Buffer, o.OverlongPenaltyFactor),
    };

    public static IReadOnlyCollection<string> Names => Builtins.Keys;

    /// <summary>
    /// Parses SPEC. <c>model:DIR</c> loads a reward model (a weight may follow the directory: <c>model:runs/rm:0.5</c>).
    /// Errors name <paramref name="option"/>, the command-line option the spec came from.
    /// </summary>
    public static CompositeReward Parse(string spec, string option = "--reward", RewardOptions? options = null)
    {
        var o = (options ?? new RewardOptions()).Validate();
        var parts = new List<(IRewardFunction, double)>();
        foreach (var item in TopLevelItems(spec))
        {
            var (name, weight) = SplitWeight(item, option);
            if (IsUrl(name))
            {
                parts.Add((new RemoteReward(name.Split('+', StringSplitOptions.TrimEntries)), weight));
                continue;
            }
            if (name.StartsWith("format:", StringComparison.Ordinal))
            {
                parts.Add((new FormatReward(name["format:".Length..]), weight));
                continue;
            }
            if (name.StartsWith("model:", StringComparison.Ordinal))
            {
                if (name.Length == "model:".Length) throw new PpoSharpException($"{option}: 'model:' needs a reward-model directory, as in model:runs/rm");
                parts.Add((RewardModelScorer.Load(name["model:".Length..]), weight));
                continue;
            }
            if (!Builtins.TryGetValue(name, out var make))
                throw new PpoSharpException($"{option}: unknown reward '{name}'; allowed: {string.Join(", ", Builtins.Keys)}, format:REGEX, model:DIR, http://HOST:PORT/PATH");
            parts.Add((make(o), weight));
        }
        return new CompositeReward(parts);
    }

    /// <summary>The reward-model folders that SPEC names (its <c>model:DIR</c> parts), without loading them.</summary>
    public static IEnumerable<string> ModelDirs(string spec) => TopLevelItems(spec)
        .Select(item => SplitWeight(item, "--reward").Name).Where(n => n.StartsWith("model:", StringComparison.Ordinal) && n.Length > "model:".Length)
        .Select(n => n["model:".Length..]);

    /// <summary>The comma-separated items of a spec; commas inside (), [] or {} belong to a <c>format:REGEX</c>.</summary>
    private static IEnumerable<string> TopLevelItems(string spec)
    {
        int depth = 0, start = 0;
        for (int i = 0; i < spec.Length; i++)
        {
            if (spec[i] is '(' or '[' or '{') depth++;
            else if (spec[i] is ')' or ']' or '}') depth = Math.Max(0, depth - 1);
            else if (spec[i] == ',' && depth == 0)
            {
                yield return spec[start..i].Trim();
                start = i + 1;
            }
        }
        yield return spec[start..].Trim();
    }

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
        if (item.StartsWith("model:", StringComparison.Ordinal) || item.StartsWith("format:", StringComparison.Ordinal)) return (item, 1);
        throw new PpoSharpException($"{option}: weight '{suffix}' of '{item[..i]}' is not a number");
    }
}

/// <summary>
/// Settings of the rewards that need more than a name: <c>overlong</c>'s budget. JSON keys as verl's DAPO recipe names
/// them; <see cref="MaxCompletionLength"/> is the trainer's <c>max_new_tokens</c>.
/// </summary>
public sealed record RewardOptions
{
    /// <summary>The column that holds the label the rule rewards score against (default <c>solution</c>; GSM8K: <c>answer</c>).</summary>
    public string SolutionColumn { get; init; } = "solution";

    /// <summary>L_max of <see cref="OverlongReward"/>: the longest completion (default 256; the trainers use their max_completion_length / response_length).</summary>
    public int MaxCompletionLength { get; init; } = 256;

    /// <summary>L_cache: the length of the soft-penalty zone before L_max (default L_max / 4, at least 1).</summary>
    public int? OverlongBufferLen { get; init; }

    /// <summary>L_cache as used: <see cref="OverlongBufferLen"/>, else L_max / 4.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int Buffer => OverlongBufferLen ?? Math.Max(1, MaxCompletionLength / 4);

    /// <summary>The penalty at L_max (default 1.0).</summary>
    public double OverlongPenaltyFactor { get; init; } = 1.0;

    /// <summary>Checks the keys; the message names the bad one.</summary>
    public RewardOptions Validate()
    {
        if (string.IsNullOrWhiteSpace(SolutionColumn)) throw new PpoSharpException("solution_column must name a column");
        if (MaxCompletionLength < 1) throw new PpoSharpException($"max_completion_length must be >= 1 (got {MaxCompletionLength})");
        if (Buffer < 1 || Buffer > MaxCompletionLength)
            throw new PpoSharpException($"overlong_buffer_len must be in [1, {MaxCompletionLength}] (the longest completion; got {Buffer})");
        if (!double.IsFinite(OverlongPenaltyFactor) || OverlongPenaltyFactor < 0)
            throw new PpoSharpException($"overlong_penalty_factor must be a finite number >= 0 (got {OverlongPenaltyFactor})");
        return this;
    }
}
