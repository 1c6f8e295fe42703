using System.Text.Json.Nodes;
using PpoSharp.Data;

namespace PpoSharp.Rewards;

/// <summary>
/// The <c>score</c> command's work: given completions scored by a reward spec without a model, one result per record
/// (the weighted total and each function's own score), so that a verifier can be checked on known answers.
/// </summary>
public static class Scoring
{
    /// <summary>One scored record: where it came from, the total and each function's part by name.</summary>
    public sealed record Scored(Source Source, double Total, IReadOnlyDictionary<string, double> Parts);

    /// <summary>
    /// Reads <paramref name="path"/> (records with a <c>completion</c>), checks every label against the rewards before
    /// scoring (a label a reward cannot read is an error naming its record), and scores all records.
    /// </summary>
    public static IReadOnlyList<Scored> Run(CompositeReward reward, string path, RewardOptions options, string? split = null)
    {
        var records = Jsonl.ReadScored(path, solutionColumn: options.SolutionColumn, split: split).Records;
        var inputs = records.Select(r => new RewardInput(r.Messages, r.Completion, r.Solutions, r.Source, null, r.Columns)).ToList();
        var prompts = records.Select(r => new PromptRecord(r.Messages, r.Solutions, r.Source, r.Columns)).ToList();
        RewardChecks.RequireSolutions(new JsonlResult<PromptRecord>(prompts, []), false, reward);
        var (total, parts) = reward.ScoreParts(inputs);
        return inputs.Select((x, i) => new Scored(x.Source, total[i], parts.ToDictionary(p => p.Key, p => p.Value[i]))).ToList();
    }

    /// <summary>A result as one compact JSON object: <c>{"source": "file:line", "total": .., "parts": {"math": .., ...}}</c>.</summary>
    public static string ToJson(Scored s)
    {
        var parts = new JsonObject();
        foreach (var (name, value) in s.Parts) parts[name] = value;
        return new JsonObject { ["source"] = s.Source.ToString(), ["total"] = s.Total, ["parts"] = parts }.ToJsonString();
    }
}
