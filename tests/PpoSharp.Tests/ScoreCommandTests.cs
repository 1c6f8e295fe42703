using System.Text.Json;

namespace PpoSharp.Tests;

/// <summary>The <c>score</c> command: completions scored by reward functions without a model, one JSON line per record.</summary>
public class ScoreCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    [Fact]
    public void Score_Gsm8kAnswerColumn_TotalAndPartsPerRecord()
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "answers.jsonl",
            """{"question": "Ana has 3 boxes of 12 eggs and breaks 5. How many are left?", "answer": "3 * 12 = 36, 36 - 5 = 31\n#### 31", "completion": "<think>36 - 5</think> \\boxed{31}"}""",
            """{"question": "q2", "answer": "#### 1,000", "completion": "It is 1000 dollars."}""",
            """{"question": "q3", "answer": "#### 7", "completion": "<think>hmm</think> 8"}""");
        var (code, output, err) = Run("score", "--reward", "math,format:0.5", "--data", data, "--set", "solution_column=answer", "--json");
        Assert.True(code == 0, err);
        var lines = output.Trim().Split('\n').Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, lines.Count);
        // record 1: math 1 + 0.5 * format 1 = 1.5; record 2: math 1 (1,000 = 1000), no think block; record 3: wrong answer, format 1
        Assert.Equal([1.5, 1.0, 0.5], lines.Select(l => l.GetProperty("total").GetDouble()));
        Assert.Equal([1.0, 1.0, 0.0], lines.Select(l => l.GetProperty("parts").GetProperty("math").GetDouble()));
        Assert.Equal([1.0, 0.0, 1.0], lines.Select(l => l.GetProperty("parts").GetProperty("format").GetDouble()));
        Assert.Equal($"{data}:2", lines[1].GetProperty("source").GetString());
    }

    [Fact]
    public void Score_ExtraColumns_ReachTheRewardByName()
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "json.jsonl",
            """{"completion": "{\"name\": \"x\", \"age\": 3}", "solution": ["name", "age"], "test_cases": [1, 2]}""");
        var records = Data.Jsonl.ReadScored(data).Records;
        // non-string columns as compact JSON text, the same for a JSON Lines record and its Parquet twin
        Assert.Equal("[1,2]", records[0].Columns["test_cases"]);
        Assert.Equal("""["name","age"]""", records[0].Columns["solution"]);
        var (code, output, _) = Run("score", "--reward", "json", "--data", data);
        Assert.Equal(0, code);
        Assert.Contains("total 1  json 1", output);
    }

    [Fact]
    public void Score_UnreadableLabel_ReportedWithRecord_NotScoredZero()
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "bad.jsonl", """{"completion": "5", "solution": "#### 5"}""", """{"completion": "5", "solution": "see the figure"}""");
        var (code, output, err) = Run("score", "--reward", "math", "--data", data);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Equal($"error: {data}:2: reward 'math' cannot read a final answer in label 'see the figure' (give it as \\boxed{{...}}, '#### N', a number or $...$)", err.Trim());
    }

    [Fact]
    public void Score_MissingCompletion_OneLine()
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "nocompletion.jsonl", """{"solution": "#### 5"}""");
        var (code, _, err) = Run("score", "--reward", "math", "--data", data);
        Assert.Equal(2, code);
        Assert.Equal($"error: {data}:1: missing field 'completion'", err.Trim());
    }
}
