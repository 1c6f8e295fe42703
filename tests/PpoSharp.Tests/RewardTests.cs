using PpoSharp.Data;
using PpoSharp.Rewards;

namespace PpoSharp.Tests;

public class RewardTests
{
    private static double Score(IRewardFunction f, string response, params string[] solutions) =>
        f.Score([new RewardInput([new ChatMessage(Role.User, "p")], response, solutions, new Source("t", 1))])[0];

    [Theory]
    [InlineData("abc", "abc", 1.0)]
    [InlineData("abd", "abc", 2.0 / 3)]
    [InlineData("", "abcd", 0.0)]
    [InlineData("kitten", "sitting", 1 - 3.0 / 7)]
    [InlineData("", "", 1.0)]
    [InlineData("a😀", "a😀", 1.0)]
    [InlineData("a😀", "ab", 0.5)]
    public void EditDistance_HandComputed(string response, string solution, double expected) =>
        Assert.Equal(expected, Score(new EditDistance(), response, solution), 12);

    [Fact]
    public void EditDistance_Group_ScoresAgainstBestSolution() =>
        Assert.Equal(1.0, Score(new EditDistance(), "yes", "no", "yes", "maybe"));

    [Theory]
    [InlineData(" 42 ", "42", 1.0)]
    [InlineData("42", "43", 0.0)]
    [InlineData("", "43", 0.0)]
    public void ExactMatch_TrimsThenCompares(string response, string solution, double expected) =>
        Assert.Equal(expected, Score(new ExactMatch(), response, solution));

    [Fact]
    public void SolutionReward_RecordWithoutSolution_ErrorNamesRecord()
    {
        var e = Assert.Throws<PpoSharpException>(() => Score(new ExactMatch(), "x"));
        Assert.Equal("t:1: reward 'exact-match' needs a 'solution' field", e.Message);
    }

    [Fact]
    public void RewardSpec_WeightedSum_AddsWeightedScores()
    {
        var r = RewardSpec.Parse("exact-match,edit-distance:0.5");
        Assert.Equal(0.5 * (2.0 / 3), Score(r, "abd", "abc"), 12);
        Assert.Equal(1.5, Score(r, "abc", "abc"), 12);
        Assert.Equal("exact-match,edit-distance:0.5", r.Name);
    }

    [Theory]
    [InlineData("edit", "unknown reward 'edit'; allowed: exact-match, edit-distance")]
    [InlineData("exact-match:x", "weight 'x' of 'exact-match' is not a number")]
    public void RewardSpec_Bad_NamesTheProblem(string spec, string message) =>
        Assert.Contains(message, Assert.Throws<PpoSharpException>(() => RewardSpec.Parse(spec)).Message);
}

public class RuleRewardTests
{
    private static double Score(IRewardFunction f, string response, params string[] solutions) =>
        f.Score([new RewardInput([new ChatMessage(Role.User, "p")], response, solutions, new Source("t", 1))])[0];

    [Theory]
    [InlineData("abcdef", 0.0)]          // 4 distinct 3-grams
    [InlineData("aaaaaa", -0.75)]        // 4 x "aaa": 3 repeated of 4
    [InlineData("abcabc", -0.25)]        // abc, bca, cab, abc: 1 repeated of 4
    [InlineData("ab", 0.0)]              // shorter than n
    [InlineData("", 0.0)]
    [InlineData("😀😀😀😀", -0.5)]        // code points, not UTF-16 units: 2 x one 3-gram
    public void Repetition_HandComputed(string response, double expected) =>
        Assert.Equal(expected, Score(new Repetition(), response), 12);

    [Theory]
    [InlineData("abcd", 0.0, "wxyz")]
    [InlineData("ab", -0.5, "wxyz")]
    [InlineData("", -1.0, "wxyz")]
    [InlineData("abcdefghijkl", -1.0, "wxyz")]   // capped
    [InlineData("abc", 0.0, "wxyz", "xyz")]      // closest solution of the group
    public void Length_HandComputed(string response, double expected, params string[] solutions) =>
        Assert.Equal(expected, Score(new LengthReward(), response, solutions), 12);

    [Fact]
    public void RewardSpec_KnowsAllRuleRewards()
    {
        var r = RewardSpec.Parse("edit-distance,repetition:0.2,length:0.1,exact-match");
        Assert.Equal(4, r.Parts.Count);
        Assert.Equal(1 + 0.2 * 0 + 0.1 * 0 + 1, Score(r, "abc", "abc"), 12);
    }

    [Fact]
    public void RequireSolutions_RuleReward_NamesFirstRecordWithout_OrSkipsThemWhenAsked()
    {
        PromptRecord P(int line, params string[] solutions) => new([new(Role.User, "q")], solutions, new Source("f.jsonl", line));
        var read = new JsonlResult<PromptRecord>([P(1, "a"), P(2), P(3, "c"), P(4)], []);
        var reward = RewardSpec.Parse("repetition,edit-distance:0.5");
        Assert.Equal("f.jsonl:2: reward 'edit-distance' needs a 'solution' field", Assert.Throws<PpoSharpException>(() => RewardChecks.RequireSolutions(read, false, reward)).Message);
        var skipped = RewardChecks.RequireSolutions(read, true, reward);
        Assert.Equal([1, 3], skipped.Records.Select(r => r.Source.Line));
        Assert.Equal(2, skipped.Skipped.Count);
        Assert.Same(read, RewardChecks.RequireSolutions(read, false, RewardSpec.Parse("repetition")));      // no rule needs a solution
    }
}
