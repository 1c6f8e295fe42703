using PpoSharp.Data;

namespace PpoSharp.Rewards;

/// <summary>
/// One scored sample: the prompt's messages, the decoded response, the record's solutions (may be empty), the
/// response's length in tokens where known, the record's other columns by name (as TRL hands extra dataset columns
/// to its reward functions; strings as they are, other JSON values as JSON text), and, for remote reward servers,
/// <paramref name="Query"/>: the rendered prompt and the response with special tokens (OpenRLHF's query).
/// </summary>
public sealed record RewardInput(IReadOnlyList<ChatMessage> Messages, string Response, IReadOnlyList<string> Solutions, Source Source,
    int? ResponseTokens = null, IReadOnlyDictionary<string, string>? Columns = null, string? Query = null)
{
    /// <summary>The last prompt message: what the response answers.</summary>
    public string Prompt => Messages[^1].Content;
}

/// <summary>
/// A reward source (the notes' "reward function": rules such as edit distance or repetition). Implement
/// <see cref="Score"/> to plug in your own: one score per input, batched so that model-based rewards can batch too.
/// </summary>
public interface IRewardFunction
{
    string Name { get; }
    IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch);

    /// <summary>The name of a part that scores against the record's <c>solution</c>, or null when none does.</summary>
    string? NeedsSolution => null;

    /// <summary>Why this reward cannot score against <paramref name="solution"/> (a label it cannot read), or null.</summary>
    string? LabelProblem(string solution) => null;
}

/// <summary>Checks of prompt records against the rewards that will score them, made when the file is read.</summary>
public static class RewardChecks
{
    /// <summary>
    /// Prompts without a <c>solution</c> where a reward needs one: an error naming the first record's file:line, before
    /// anything is written; with <paramref name="skipInvalid"/>, such records are skipped and reported instead.
    /// </summary>
    public static JsonlResult<PromptRecord> RequireSolutions(JsonlResult<PromptRecord> read, bool skipInvalid, params IRewardFunction?[] rewards)
    {
        var rule = rewards.Select(r => r?.NeedsSolution).FirstOrDefault(n => n is not null);
        if (rule is null) return read;
        var functions = rewards.OfType<IRewardFunction>().SelectMany(RewardSpec.Functions).ToList();
        var missing = read.Records.Select(p => p.Solutions.Count == 0 ? $"{p.Source}: reward '{rule}' needs a 'solution' field" : LabelProblem(p, functions))
            .OfType<string>().ToList();
        if (missing.Count == 0) return read;
        if (!skipInvalid) throw new PpoSharpException(missing[0]);
        var kept = read.Records.Where(p => p.Solutions.Count > 0 && LabelProblem(p, functions) is null).ToList();
        if (kept.Count == 0) throw new PpoSharpException($"every record lacks the 'solution' that reward '{rule}' needs (first: {missing[0]})");
        return new JsonlResult<PromptRecord>(kept, [.. read.Skipped, .. missing]);
    }

    /// <summary>The first label of <paramref name="p"/> that one of <paramref name="functions"/> cannot read, as "file:line: problem".</summary>
    private static string? LabelProblem(PromptRecord p, IReadOnlyList<IRewardFunction> functions) => functions
        .SelectMany(f => p.Solutions.Select(f.LabelProblem)).OfType<string>().Select(problem => $"{p.Source}: {problem}").FirstOrDefault();
}

/// <summary>A rule scored against the record's <c>solution</c>; with a group of solutions the best one counts.</summary>
public abstract class SolutionReward : IRewardFunction
{
    public abstract string Name { get; }

    public string? NeedsSolution => Name;

    /// <inheritdoc/>
    public virtual string? LabelProblem(string solution) => null;

    /// <summary>Score of <paramref name="response"/> against one solution.</summary>
    protected abstract double ScoreOne(string response, string solution);

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batch.Select(x =>
    {
        if (x.Solutions.Count == 0) throw new PpoSharpException($"{x.Source}: reward '{Name}' needs a 'solution' field");
        return x.Solutions.Max(s => ScoreOne(x.Response, s));
    }).ToArray();
}

/// <summary>1 when the trimmed response equals a trimmed solution, else 0.</summary>
public sealed class ExactMatch : SolutionReward
{
    public override string Name => "exact-match";
    protected override double ScoreOne(string response, string solution) => response.Trim() == solution.Trim() ? 1 : 0;
}

/// <summary>1 - Levenshtein(response, solution) / max(|response|, |solution|), in [0, 1], over Unicode code points.</summary>
public sealed class EditDistance : SolutionReward
{
    public override string Name => "edit-distance";

    protected override double ScoreOne(string response, string solution)
    {
        var a = CodePoints(response.Trim());
        var b = CodePoints(solution.Trim());
        int longest = Math.Max(a.Length, b.Length);
        return longest == 0 ? 1 : 1 - (double)Levenshtein(a, b) / longest;
    }

    /// <summary>Classic two-row dynamic programme: insertions, deletions and substitutions cost 1.</summary>
    public static int Levenshtein(int[] a, int[] b)
    {
        var prev = Enumerable.Range(0, b.Length + 1).ToArray();
        var cur = new int[b.Length + 1];
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    // Levenshtein packages for .NET compare UTF-16 units; a character outside the BMP must count once.
    internal static int[] CodePoints(string s)
    {
        var list = new List<int>(s.Length);
        for (int i = 0; i < s.Length; i += char.IsSurrogatePair(s, i) ? 2 : 1) list.Add(char.ConvertToUtf32(s, i));
        return [.. list];
    }
}

/// <summary>
/// The notes' repetition ("重复度") penalty: -(repeated n-grams / all n-grams) over code points, in [-1, 0];
/// 0 for a response shorter than n. Needs no solution.
/// </summary>
public sealed class Repetition(int n = 3) : IRewardFunction
{
    public string Name => "repetition";

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batch.Select(x => Penalty(x.Response)).ToArray();

    public double Penalty(string text)
    {
        var cps = EditDistance.CodePoints(text);
        int count = cps.Length - n + 1;
        if (count <= 0) return 0;
        var grams = Enumerable.Range(0, count).Select(i => string.Join(",", cps.Skip(i).Take(n))).ToList();
        return -(double)(count - grams.Distinct().Count()) / count;
    }
}

/// <summary>
/// Length in the solution's range: -|len(response) - len(solution)| / max(len(solution), 1), capped at -1, against the
/// closest solution of the group (0 when the length matches).
/// </summary>
public sealed class LengthReward : SolutionReward
{
    public override string Name => "length";

    protected override double ScoreOne(string response, string solution)
    {
        int r = EditDistance.CodePoints(response.Trim()).Length, s = EditDistance.CodePoints(solution.Trim()).Length;
        return -Math.Min(1, (double)Math.Abs(r - s) / Math.Max(s, 1));
    }
}
