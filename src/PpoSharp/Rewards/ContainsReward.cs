namespace PpoSharp.Rewards;

/// <summary><c>contains</c>: 1 when the label (the record's <c>solution</c>, or one of its group) occurs in the completion, else 0 (ordinal, case-sensitive).</summary>
public sealed class ContainsReward : SolutionReward
{
    public override string Name => "contains";

    protected override double ScoreOne(string response, string solution) =>
        solution.Length > 0 && response.Contains(solution, StringComparison.Ordinal) ? 1 : 0;

    public override string? LabelProblem(string solution) => solution.Length == 0 ? "reward 'contains' has an empty label" : null;
}
