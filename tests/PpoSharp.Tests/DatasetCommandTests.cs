using System.Text.Json.Nodes;

namespace PpoSharp.Tests;

/// <summary>
/// TRL's dataset formats through the commands that take them (one short step each), and GSM8K's own columns through
/// grpo with the math verifier, with no code written: --set prompt_column=question --set solution_column=answer.
/// </summary>
public class DatasetCommandTests
{
    private static string Policy => Path.Combine(TestSupport.TrainedSortModel, "model");

    private const string U = """{"role":"user","content":"sort: ba"}""", A = """{"role":"assistant","content":"ab"}""", R = """{"role":"assistant","content":"ba"}""";

    /// <summary>A command, and two records of one format it takes (standard and conversational forms of each).</summary>
    public static TheoryData<string, string> Taken => new()
    {
        { "sft", """{"text": "sort: ba ab"}""" },
        { "sft", $$"""{"messages": [{{U}}, {{A}}]}""" },
        { "sft", """{"prompt": "sort: ba ", "completion": "ab"}""" },
        { "sft", $$"""{"prompt": [{{U}}], "completion": [{{A}}]}""" },
        { "dpo", """{"prompt": "sort: ba", "chosen": "ab", "rejected": "ba"}""" },
        { "dpo", $$"""{"chosen": [{{U}}, {{A}}], "rejected": [{{U}}, {{R}}]}""" },
        { "rm", $$"""{"prompt": [{{U}}], "chosen": [{{A}}], "rejected": [{{R}}]}""" },
        { "rm", """{"chosen": "sort: ba ab", "rejected": "sort: ba ba"}""" },
    };

    [Theory, MemberData(nameof(Taken))]
    public void Command_FormatItTakes_TrainsOneStep(string command, string line)
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "d.jsonl", line, line);
        var outDir = Path.Combine(dir, "out");
        string[] args = command == "sft"
            ? ["sft", "--data", data, "--out", outDir, "--set", "steps=1", "--set", "batch_size=2", "--set", "eval_fraction=0", "--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=1"]
            : [command, "--data", data, "--init", Policy, "--out", outDir, "--set", "steps=1", "--set", "batch_size=2", "--set", "eval_fraction=0"];
        var (code, _, err) = TestSupport.RunCli(args);
        Assert.True(code == 0, err);
        var metrics = File.ReadAllLines(Path.Combine(outDir, "metrics.jsonl"));
        Assert.Equal(1, JsonNode.Parse(metrics[^1])!["step"]!.GetValue<int>());
    }

    [Fact]
    public void Grpo_Gsm8kParquetFolder_MappedColumnsScoredByMath()
    {
        var gsm8k = Path.Combine(AppContext.BaseDirectory, "ParquetData", "gsm8k");
        var outDir = Path.Combine(TestSupport.TempDir(), "grpo");
        var (code, output, err) = TestSupport.RunCli("grpo", "--init", TestSupport.HfModel("tiny-llama3"), "--data", gsm8k, "--split", "train", "--eval", gsm8k,
            "--reward", "math,format:0.2", "--out", outDir, "--set", "prompt_column=question", "--set", "solution_column=answer",
            "--set", "system_prompt=Reason, then give the answer after ####.", "--set", "iterations=2", "--set", "batch_size=3",
            "--set", "num_generations=2", "--set", "num_mini_batches=1", "--set", "max_completion_length=6");
        Assert.True(code == 0, err + output);
        var rows = File.ReadAllLines(Path.Combine(outDir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).Where(r => r["rewards/math/mean"] is not null).ToList();
        Assert.Equal(2, rows.Count);                                          // both iterations scored by the math verifier
        Assert.All(rows, r => Assert.NotNull(r["rewards/format/mean"]));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "training_config.json")))!;
        Assert.Equal("question", config["prompt_column"]!.GetValue<string>());
        Assert.Equal("answer", config["solution_column"]!.GetValue<string>());
    }
}
