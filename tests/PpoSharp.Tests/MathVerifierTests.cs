using System.Diagnostics;
using System.Text;
using System.Text.Json;
using PpoSharp.Rewards;
using Xunit.Abstractions;

namespace PpoSharp.Tests;

/// <summary>
/// The math verifier against MathData/equivalence.jsonl: cases taken from Hugging Face Math-Verify's tests (their
/// expected result) and pairs run through the Hendrycks MATH normaliser (is_equiv as verl ships it), each with its source.
/// A row whose "covered" is a string is a case we do not decide like the reference; the string says why (README lists them).
/// </summary>
public class MathVerifierTests(ITestOutputHelper log)
{
    private sealed record Case(string Gold, string Pred, int Reference, string Source, JsonElement Covered, int? Expected);

    private static List<Case> Table() => File.ReadLines(Path.Combine(AppContext.BaseDirectory, "MathData", "equivalence.jsonl"))
        .Select(l => JsonSerializer.Deserialize<Case>(l, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!).ToList();

    /// <summary>What our verifier says: the pred's extracted answer against the gold's, as the math reward scores them.</summary>
    private static int Ours(Case c)
    {
        var gold = MathAnswer.Extract(c.Gold);
        var pred = MathAnswer.Extract(c.Pred);
        return gold is not null && pred is not null && MathAnswer.Equivalent(pred, gold) ? 1 : 0;
    }

    [Fact]
    public void EquivalenceTable_CoveredCases_AgreeWithReference()
    {
        var table = Table();
        var covered = table.Where(c => c.Covered.ValueKind != JsonValueKind.String).ToList();
        var wrong = new StringBuilder();
        foreach (var c in covered)
        {
            int want = c.Expected ?? c.Reference;
            if (Ours(c) != want) wrong.AppendLine($"{JsonSerializer.Serialize(c.Gold)} vs {JsonSerializer.Serialize(c.Pred)}: want {want} ({c.Source})");
        }
        Assert.True(wrong.Length == 0, wrong.ToString());
        Assert.True(covered.Count >= 150, $"only {covered.Count} covered cases");
        Assert.All(covered.Where(c => c.Source.StartsWith("huggingface/Math-Verify", StringComparison.Ordinal)), c => Assert.Null(c.Expected));
        log.WriteLine($"{covered.Count} covered of {table.Count}; {covered.Count(c => c.Source.Contains("Math-Verify"))} from Math-Verify");
    }
}
