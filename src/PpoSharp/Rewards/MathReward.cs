namespace PpoSharp.Rewards;

/// <summary>
/// <c>math</c>: 1 when the completion's final answer equals the label's, else 0 (<see cref="MathAnswer"/> extracts both,
/// so a GSM8K answer ending in <c>#### 42</c> and a MATH solution ending in <c>\boxed{...}</c> both work as labels).
/// A label with no readable answer is an error when the data is read, never a silent 0.
/// </summary>
public sealed class MathReward : SolutionReward
{
    public override string Name => "math";

    protected override double ScoreOne(string response, string solution)
    {
        var label = MathAnswer.Extract(solution);
        var answer = MathAnswer.Extract(response);
        return label is not null && answer is not null && MathAnswer.Equivalent(answer, label) ? 1 : 0;
    }

    public override string? LabelProblem(string solution) => MathAnswer.Extract(solution) is null
        ? $"reward 'math' cannot read a final answer in label '{Preview(solution)}' (give it as \\boxed{{...}}, '#### N', a number or $...$)"
        : null;

    private static string Preview(string s) => s.Length <= 60 ? s.ReplaceLineEndings(" ") : s[..57].ReplaceLineEndings(" ") + "...";
}
