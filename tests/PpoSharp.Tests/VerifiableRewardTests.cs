using System.Diagnostics;
using System.Text;
using PpoSharp.Data;
using PpoSharp.Rewards;
using Xunit.Abstractions;

namespace PpoSharp.Tests;

/// <summary>The verifiable rewards (math, format, overlong, contains, json), each on hand-worked inputs, and the math verifier under hostile input.</summary>
public class VerifiableRewardTests(ITestOutputHelper log)
{
    private static double Score(IRewardFunction f, string response, params string[] solutions) =>
        f.Score([new RewardInput([new ChatMessage(Role.User, "p")], response, solutions, new Source("t", 1))])[0];

    [Theory]
    [InlineData(@"so \boxed{\frac{\sqrt{2}}{2}} is it", @"\frac{\sqrt{2}}{2}")]
    [InlineData(@"first \boxed{1} then \boxed{{2}}", "1,{2}")]
    [InlineData("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72")]
    [InlineData("I think the answer is 42. Next line 7", "42")]
    [InlineData("We get 3 apples and then 5 pears, 8 fruit", "8")]
    [InlineData("$x = 2$ follows from that", "x = 2")]
    [InlineData("no number here", null)]
    [InlineData(@"unclosed \boxed{3 and 4", "4")]
    public void Extract_Completion_FindsFinalAnswer(string text, string? expected) => Assert.Equal(expected, MathAnswer.Extract(text));

    [Theory]
    [InlineData("1,000", "1000", true)]
    [InlineData(@"\dfrac12", "0.5", true)]
    [InlineData("1/2", @"\frac{1}{2}", true)]
    [InlineData(@"50\%", "50", true)]
    [InlineData(@"\$1,234.50", "1234.5", true)]
    [InlineData(@"-\frac{3}{4}", "-0.75", true)]
    [InlineData(@"\sqrt{2}/2", @"\frac{\sqrt2}{2}", true)]
    [InlineData(@"90^\circ", "90", true)]
    [InlineData(@"12\text{ cm}", "12", true)]
    [InlineData(@"\left(1, \frac{1}{2}\right)", "(1,0.5)", true)]
    [InlineData("(1,2)", "(2,1)", false)]
    [InlineData("[0,1)", "[0,1]", false)]
    [InlineData("2-2p", "-2p+2", true)]
    [InlineData("2-2p", "2-2q", false)]
    [InlineData("3", "3.0000001", true)]  // |3 - 3.0000001| = 1e-7 <= 1e-6 * 3.0000001
    [InlineData("3", "3.00001", false)]   // 1e-5 > 3e-6
    [InlineData("", "", false)]
    public void Equivalent_HandPicked_AsExpected(string a, string b, bool expected) => Assert.Equal(expected, MathAnswer.Equivalent(a, b));

    [Fact]
    public void MathReward_Gsm8kLabel_ScoresFinalAnswer()
    {
        var label = "He has 3 * 12 = <<3*12=36>>36 eggs and breaks 5, so 36 - 5 = <<36-5=31>>31.\n#### 31";
        Assert.Equal(1.0, Score(new MathReward(), "<think>36 - 5</think> The answer is \\boxed{31}.", label));
        Assert.Equal(0.0, Score(new MathReward(), "The answer is \\boxed{36}.", label));
        Assert.Equal(0.0, Score(new MathReward(), "I do not know", label));
    }

    [Fact]
    public void MathReward_UnreadableLabel_IsReportedNotScored()
    {
        var problem = new MathReward().LabelProblem("see the figure");
        Assert.Equal("reward 'math' cannot read a final answer in label 'see the figure' (give it as \\boxed{...}, '#### N', a number or $...$)", problem);
        Assert.Null(new MathReward().LabelProblem("#### 12"));
    }

    [Theory]
    [InlineData("<think>\nadd them\n</think>\n42", 1.0)]
    [InlineData("<think>a</think>", 1.0)]
    [InlineData("<think>a</think> b <think>c</think>", 0.0)]  // a second <think>
    [InlineData("x <think>a</think> b", 0.0)]                 // not at the start
    [InlineData("<think>a b", 0.0)]                           // never closed
    public void Format_ThinkLayout_AsTrl(string response, double expected) => Assert.Equal(expected, Score(new FormatReward(), response));

    [Fact]
    public void Format_CustomRegex_MustMatchWholeCompletion()
    {
        var f = new FormatReward(@"<answer>\d{1,3}</answer>");
        Assert.Equal(1.0, Score(f, "<answer>42</answer>"));
        Assert.Equal(0.0, Score(f, "<answer>42</answer> extra"));
        Assert.Equal(0.0, Score(f, "<answer>4242</answer>"));
    }

    [Theory]
    [InlineData(80, 1.0, 0.0)]     // 80 <= 100 - 20: inside the budget
    [InlineData(90, 1.0, -0.5)]    // (100 - 20 - 90) / 20 = -0.5
    [InlineData(100, 1.0, -1.0)]   // (80 - 100) / 20 = -1
    [InlineData(150, 1.0, -1.0)]   // past L_max: -factor
    [InlineData(90, 0.5, -0.25)]   // -0.5 * 0.5
    public void Overlong_DapoSoftPenalty_HandComputed(int length, double factor, double expected) =>
        Assert.Equal(expected, new OverlongReward(100, 20, factor).Penalty(length), 12);

    [Fact]
    public void Overlong_UsesTokenCountWhenKnown()
    {
        var input = new RewardInput([new ChatMessage(Role.User, "p")], "short", [], new Source("t", 1), ResponseTokens: 90);
        Assert.Equal(-0.5, new OverlongReward(100, 20, 1).Score([input])[0], 12);
    }

    [Theory]
    [InlineData("The capital is Paris.", "Paris", 1.0)]
    [InlineData("The capital is paris.", "Paris", 0.0)]
    public void Contains_LabelInCompletion(string response, string label, double expected) => Assert.Equal(expected, Score(new ContainsReward(), response, label));

    [Theory]
    [InlineData("{\"a\": 1, \"b\": [2]}", "[\"a\",\"b\"]", 1.0)]
    [InlineData("{\"a\": 1}", "a, c", 0.0)]
    [InlineData("Here:\n```json\n{\"a\": 1}\n```", "a", 1.0)]
    [InlineData("{\"a\": 1", "a", 0.0)]
    [InlineData("[1, 2]", "a", 0.0)]
    public void Json_ParsesAndHasKeys(string response, string label, double expected) => Assert.Equal(expected, Score(new JsonReward(), response, label));

    [Fact]
    public void Json_NoLabel_OnlyParses()
    {
        Assert.Equal(1.0, Score(new JsonReward(), "[1, 2]"));
        Assert.Equal(0.0, Score(new JsonReward(), "nope"));
    }

    [Fact]
    public void RewardSpec_MathFormatWeights_ComposeAsSum()
    {
        var r = RewardSpec.Parse(@"math,format:<think>.*</think>\s*\d{1,3}:0.5");
        Assert.Equal(["math", @"format:<think>.*</think>\s*\d{1,3}"], r.Parts.Select(p => p.Function.Name));
        Assert.Equal([1.0, 0.5], r.Parts.Select(p => p.Weight));
        // math 1 + 0.5 * format 1
        Assert.Equal(1.5, Score(r, "<think>x</think> 42", "#### 42"));
    }

    [Fact]
    public void RewardSpec_BadRegex_OneLine()
    {
        var e = Assert.Throws<PpoSharpException>(() => RewardSpec.Parse("format:(abc"));
        Assert.StartsWith("--reward: format:(abc is not a valid regex", e.Message);
    }

    [Fact]
    public void RewardOptions_BufferLongerThanMax_NamesKey()
    {
        var e = Assert.Throws<PpoSharpException>(() => RewardSpec.Parse("overlong", options: new RewardOptions { MaxCompletionLength = 10, OverlongBufferLen = 20 }));
        Assert.StartsWith("overlong_buffer_len must be in [1, 10]", e.Message);
    }

    /// <summary>10,000 random strings over LaTeX-ish pieces plus hostile inputs: the verifier answers every one (no exception) and the slowest is printed.</summary>
    [Fact]
    public void MathVerifier_RandomAndHostileInputs_NeverThrows()
    {
        string[] pieces = [@"\boxed{", "{", "}", @"\frac", "1", "2", "0.5", ",", "(", ")", "[", "]", "$", "####", "the answer is ", @"\sqrt", "^", "-", "+", "/",
            @"\left", @"\right", "x", "=", @"\text{", " ", "\n", "%", @"\pm", @"\cup", @"\{", @"\}", @"\approx", "and", "ü", "😀", "\\"];
        var rng = new Random(7);
        var inputs = new List<string>();
        for (int i = 0; i < 10_000; i++)
            inputs.Add(string.Concat(Enumerable.Range(0, rng.Next(0, 40)).Select(_ => pieces[rng.Next(pieces.Length)])));
        inputs.Add(new string('{', 50_000));
        inputs.Add(new string('}', 50_000) + @"\boxed{");
        inputs.Add(new string('7', 100_000));
        inputs.Add(@"\boxed{" + new string('7', 100_000) + "}");
        inputs.Add(string.Concat(Enumerable.Repeat(@"\boxed{", 1000)) + "5" + new string('}', 1000));
        inputs.Add(string.Concat(Enumerable.Repeat(@"\boxed{", 1000)) + "5");
        inputs.Add(string.Concat(Enumerable.Repeat("(", 5000)) + "1" + string.Concat(Enumerable.Repeat(")", 5000)));
        inputs.Add(string.Concat(Enumerable.Repeat(@"\frac{1}{", 300)) + "2" + new string('}', 300));
        inputs.Add(string.Concat(Enumerable.Repeat("$1$ ", 20_000)));
        inputs.Add(string.Concat(Enumerable.Repeat("1,", 30_000)));
        inputs.Add(string.Concat(Enumerable.Repeat("the answer is 3 ", 10_000)));
        inputs.Add(string.Concat(Enumerable.Repeat(@"\boxed{1} ", 5_000)));
        inputs.Add(string.Concat(Enumerable.Repeat(@"\text{", 3_000)) + new string('}', 3_000));
        var reward = new MathReward();
        var slowest = (Ms: 0.0, Input: "");
        var clock = new Stopwatch();
        int scored = 0;
        foreach (var text in inputs)
        {
            double s = Score(reward, text, "#### 5") + Score(reward, "\\boxed{5}", text.Length == 0 ? "0" : text);
            Assert.InRange(s, 0, 2);
            scored++;
            // the fastest of three runs: the machine's other processes add pauses that are not the verifier's
            double ms = Enumerable.Range(0, 3).Min(_ =>
            {
                clock.Restart();
                Score(reward, text, "#### 5");
                Score(reward, "\\boxed{5}", text.Length == 0 ? "0" : text);
                return clock.Elapsed.TotalMilliseconds;
            });
            if (ms > slowest.Ms) slowest = (ms, text.Length > 40 ? text[..40] + $"... ({text.Length} chars)" : text);
        }
        log.WriteLine($"{scored} inputs; slowest {slowest.Ms:F2} ms: {slowest.Input}");
        Assert.Equal(inputs.Count, scored);
        Assert.True(slowest.Ms < 1000, $"slowest {slowest.Ms:F0} ms");  // generous against a loaded machine: the figure is in the log (measured ~2 ms)
    }
}
