using PpoSharp.Data;

namespace PpoSharp.Tests;

public class DataTests
{
    private const string Good = """{"messages":[{"role":"user","content":"sort: ba"},{"role":"assistant","content":"ab"}]}""";

    public static TheoryData<string, string> BadChatLines => new()
    {
        { """{"messages": [""", "invalid JSON" },
        { """[1, 2]""", "a record must be a JSON object" },
        { """{"msgs": []}""", "missing field 'messages'" },
        { """{"messages": "hi"}""", "'messages' must be an array" },
        { """{"messages": []}""", "'messages' is empty" },
        { """{"messages": [{"role":"bot","content":"x"}]}""", "'messages[0].role' is 'bot'; allowed: system, user, assistant" },
        { """{"messages": [{"role":"user"}]}""", "missing field 'messages[0].content'" },
        { """{"messages": [{"role":"user","content":5}]}""", "'messages[0].content' must be a string, not number" },
        { """{"messages": [{"role":"user","content":""}]}""", "'messages[0].content' is empty" },
        { """{"messages": [{"role":"user","content":"x"}]}""", "no assistant message" },
    };

    [Theory, MemberData(nameof(BadChatLines))]
    public void ReadChat_BadLine_ErrorNamesFileLineAndProblem(string bad, string problem)
    {
        var path = TestSupport.WriteLines(TestSupport.TempDir(), "chat.jsonl", Good, "", bad);
        var e = Assert.Throws<PpoSharpException>(() => Jsonl.ReadChat(path));
        Assert.StartsWith($"{path}:3: ", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void ReadChat_SkipInvalid_CountsAndKeepsTheRest()
    {
        var path = TestSupport.WriteLines(TestSupport.TempDir(), "chat.jsonl", Good, "{bad", Good, """{"messages": []}""");
        var r = Jsonl.ReadChat(path, skipInvalid: true);
        Assert.Equal(2, r.Records.Count);
        Assert.Equal(2, r.Skipped.Count);
        Assert.Contains(":2: invalid JSON", r.Skipped[0]);
        Assert.Contains(":4: 'messages' is empty", r.Skipped[1]);
        Assert.Equal(3, r.Records[1].Source.Line);
    }

    [Fact]
    public void ReadPrompts_SolutionStringOrGroup_AreBothRead()
    {
        var path = TestSupport.WriteLines(TestSupport.TempDir(), "p.jsonl",
            """{"messages":[{"role":"user","content":"q"}],"solution":"a"}""",
            """{"messages":[{"role":"user","content":"q"}],"solution":["a","b"]}""",
            """{"messages":[{"role":"user","content":"q"}]}""");
        var r = Jsonl.ReadPrompts(path).Records;
        Assert.Equal(new[] { "a" }, r[0].Solutions);
        Assert.Equal(new[] { "a", "b" }, r[1].Solutions);
        Assert.Empty(r[2].Solutions);
    }

    [Theory]
    [InlineData("""{"messages":[{"role":"user","content":"q"}],"solution":3}""", "'solution' must be a string or an array of strings")]
    [InlineData("""{"messages":[{"role":"user","content":"q"}],"solution":["a",1]}""", "'solution' must be a string or an array of strings")]
    [InlineData("""{"messages":[{"role":"user","content":"q"}],"solution":[]}""", "'solution' is an empty array")]
    [InlineData("""{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}""", "nothing to answer")]
    public void ReadPrompts_BadLine_ErrorNamesLineAndProblem(string bad, string problem)
    {
        // the file's format (prompt-only) comes from its first record; the bad one is read as a prompt
        var path = TestSupport.WriteLines(TestSupport.TempDir(), "p.jsonl", """{"messages":[{"role":"user","content":"q"}]}""", bad);
        var e = Assert.Throws<PpoSharpException>(() => Jsonl.ReadPrompts(path));
        Assert.StartsWith($"{path}:2: ", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Theory]
    [InlineData("""{"messages":[{"role":"user","content":"q"}],"chosen":"a"}""", "missing field 'rejected'")]
    [InlineData("""{"messages":[{"role":"user","content":"q"}],"chosen":"a","rejected":"a"}""", "'chosen' and 'rejected' are identical")]
    [InlineData("""{"messages":[{"role":"user","content":"q"}],"chosen":"a","rejected":"b","margin":"x"}""", "'margin' must be a finite number")]
    public void ReadPreferences_BadLine_ErrorNamesLineAndProblem(string bad, string problem)
    {
        var path = TestSupport.WriteLines(TestSupport.TempDir(), "pairs.jsonl", bad);
        var e = Assert.Throws<PpoSharpException>(() => Jsonl.ReadPreferences(path));
        Assert.StartsWith($"{path}:1: ", e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void ReadPreferences_GoodPair_KeepsMargin()
    {
        var path = TestSupport.WriteLines(TestSupport.TempDir(), "pairs.jsonl",
            """{"messages":[{"role":"user","content":"q"}],"chosen":"a","rejected":"b","margin":0.5}""");
        var r = Jsonl.ReadPreferences(path).Records[0];
        Assert.Equal(("a", "b", 0.5), (r.Chosen, r.Rejected, r.Margin));
    }

    [Fact]
    public void Read_MissingOrEmptyFile_IsAnError()
    {
        var dir = TestSupport.TempDir();
        Assert.Contains("file not found", Assert.Throws<PpoSharpException>(() => Jsonl.ReadChat(Path.Combine(dir, "nope.jsonl"))).Message);
        var empty = TestSupport.WriteLines(dir, "empty.jsonl", "");
        Assert.Contains("no records", Assert.Throws<PpoSharpException>(() => Jsonl.ReadChat(empty)).Message);
    }

    [Fact]
    public void TaskData_WritesReadableFiles_EvalDisjointFromTraining_NoiseCorruptsShare()
    {
        var dir = TestSupport.TempDir();
        TaskData.Write(new AddNumbersTask(), dir, 500, 50, noise: 0.4, seed: 2);
        var sft = Jsonl.ReadChat(Path.Combine(dir, TaskData.SftFile)).Records;
        var train = Jsonl.ReadPrompts(Path.Combine(dir, TaskData.PromptsFile)).Records;
        var eval = Jsonl.ReadPrompts(Path.Combine(dir, TaskData.EvalFile)).Records;
        Jsonl.ReadPreferences(Path.Combine(dir, TaskData.PreferencesFile));
        Assert.Empty(train.Select(p => p.Messages[0].Content).Intersect(eval.Select(p => p.Messages[0].Content)));
        int wrong = sft.Zip(train).Count(x => x.First.Messages[1].Content != x.Second.Solutions[0]);
        Assert.InRange(wrong / 500.0, 0.3, 0.5);
        var (a, b) = (train[0].Messages[0].Content[5..].Split('+') is var p ? (int.Parse(p[0]), int.Parse(p[1])) : default);
        Assert.Equal((a + b).ToString(), train[0].Solutions[0]);
    }
}
