using System.Text.Json;

namespace PpoSharp.Tests;

public class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    private static string Model => Path.Combine(TestSupport.TrainedSortModel, "model");
    private static string EvalFile => Path.Combine(TestSupport.TrainedSortModel, "data", "eval.jsonl");

    [Fact]
    public void Help_NamesEveryMethodAndTool_RmNamesTheLinearScoreHead()
    {
        var top = TestSupport.RunCli("--help");
        Assert.Equal(0, top.Code);
        foreach (var word in new[] { "SFT", "reward models", "PPO", "GRPO", "DPO", "LoRA", "export", "GGUF", "serve" })
            Assert.Contains(word, top.Out.Split("Usage:")[0]);                               // the description line, not the command list
        var rm = TestSupport.RunCli("rm", "--help");                                          // was "Option '--out' is required" (an internal error)
        Assert.True(rm.Code == 0, rm.Err);
        Assert.Contains("a linear score head on a pretrained model", rm.Out);
    }

    [Fact]
    public void Eval_PrintsOneJsonObject_WithRequiredKeys()
    {
        var (code, output, _) = Run("eval", "--model", Model, "--data", EvalFile, "--reward", "edit-distance", "--max-new-tokens", "12");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output.Trim());
        Assert.Equal(100, doc.RootElement.GetProperty("n").GetInt32());
        Assert.InRange(doc.RootElement.GetProperty("exact_match").GetDouble(), 0.15, 1);
        Assert.InRange(doc.RootElement.GetProperty("reward_mean").GetDouble(), doc.RootElement.GetProperty("exact_match").GetDouble(), 1);
    }

    [Fact]
    public void Generate_PrintsTheModelsAnswer()
    {
        var (code, output, _) = Run("generate", "--model", Model, "--prompt", "sort: cba");
        Assert.Equal(0, code);
        var answer = output.Trim();
        Assert.Equal(3, answer.Length);
        Assert.All(answer, ch => Assert.Contains(ch, "abc"));
    }

    public static TheoryData<string[], string> UserMistakes => new()
    {
        { ["eval", "--model", "{model}", "--data", "/nonexistent.jsonl"], "/nonexistent.jsonl: file not found" },
        { ["eval", "--model", "/nonexistent", "--data", "{eval}"], "/nonexistent: model directory not found" },
        { ["eval", "--model", "{model}", "--data", "{eval}", "--reward", "bleu"], "unknown reward 'bleu'" },
        { ["sft", "--data", "{eval}", "--out", "/tmp/x"], "sft takes language modelling" },
        { ["sft", "--data", "x", "--out", "y", "--set", "nope=1"], "unknown key 'nope'" },
        { ["sft", "--data", "x", "--out", "y", "--set", "batch_size=0"], "batch_size must be > 0 (got 0)" },
        { ["sft", "--out", "y"], "Option '--data' is required" },
        { ["generate", "--model", "{model}", "--prompt", "x", "--top-p", "0"], "--top-p must be in" },
        { ["data", "--out", "/tmp/x", "--task", "chess"], "unknown task 'chess'; allowed: sort, add" },
        { ["frobnicate"], "error:" },
    };

    [Theory, MemberData(nameof(UserMistakes))]
    public void UserMistake_OneLineOnStderr_ExitCode2(string[] args, string message)
    {
        var resolved = args.Select(a => a.Replace("{model}", Model).Replace("{eval}", EvalFile)).ToArray();
        var (code, output, errors) = Run(resolved);
        Assert.Equal(2, code);
        Assert.Contains(message, errors);
        Assert.Single(errors.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", errors);
        Assert.Equal("", output);
    }

    [Fact]
    public void Sft_IntoNonEmptyOut_IsRefusedAndLeavesItUntouched()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), "precious");
        var data = Path.Combine(TestSupport.TrainedSortModel, "data", "sft.jsonl");
        var (code, _, errors) = Run("sft", "--data", data, "--out", dir, "--set", "steps=1");
        Assert.Equal(2, code);
        Assert.Contains("output directory is not empty", errors);
        Assert.Equal("precious", File.ReadAllText(Path.Combine(dir, "config.json")));
    }

    [Fact]
    public void Demo_TinySize_WritesDataModelsMetricsAndTable()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "demo");
        var (code, output, errors) = Run("demo", "--out", dir, "--set", "train_records=300", "--set", "eval_prompts=20",
            "--set", "sft.steps=30", "--set", "sft.d_model=32", "--set", "sft.n_layer=1",
            "--set", "methods=rm,ppo,grpo,dpo", "--set", "rm.steps=5", "--set", "ppo.iterations=2", "--set", "ppo.batch_size=16", "--set", "ppo.response_length=10",
            "--set", "grpo.iterations=2", "--set", "grpo.batch_size=4", "--set", "grpo.num_generations=2", "--set", "grpo.max_completion_length=10",
            "--set", "dpo.steps=3", "--set", "dpo.batch_size=8");
        Assert.True(code == 0, errors);
        foreach (var f in new[] { "data/sft.jsonl", "data/eval.jsonl", "sft/model.safetensors", "sft/config.json", "sft/tokenizer.json",
                     "sft/metrics.jsonl", "rm/model.safetensors", "rm/metrics.jsonl", "ppo/model.safetensors", "ppo/critic/model.safetensors",
                     "ppo/metrics.jsonl", "grpo/model.safetensors", "grpo/completions.jsonl", "dpo/model.safetensors", "dpo/metrics.jsonl", "summary.json", "report.html", "plots/sft_loss.png", "plots/rm_loss.png", "plots/rm_accuracy.png",
                     "plots/ppo_reward.png", "plots/ppo_kl.png", "plots/ppo_entropy.png", "plots/ppo_clipfrac.png", "plots/ppo_value_loss.png",
                     "plots/ppo_explained_variance.png", "plots/grpo_reward.png", "plots/grpo_clip_ratio.png", "plots/dpo_loss.png", "plots/dpo_accuracy.png" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        Assert.Equal(30, File.ReadAllLines(Path.Combine(dir, "sft/metrics.jsonl")).Length);
        Assert.Equal(2, File.ReadAllLines(Path.Combine(dir, "ppo/metrics.jsonl")).Length);
        Assert.Contains("KL to SFT", output);
        Assert.Contains("samples", output);
        Assert.False(Directory.Exists(Path.Combine(dir, "grpo", "critic")));
        // One column per model; PPO and GRPO report the tokens they generated (16 x 2 and 4 x 2 x 2 responses, 1 to 10 tokens each).
        var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json"))).RootElement;
        Assert.Equal(["SFT", "PPO", "GRPO", "DPO"], summary.GetProperty("columns").EnumerateArray().Select(c => c.GetString()));
        var tokens = summary.GetProperty("table").EnumerateArray().Single(r => r.GetProperty("metric").GetString() == "tokens generated in training")
            .GetProperty("values").EnumerateArray().Select(v => double.Parse(v.GetString()!)).ToArray();
        Assert.Equal(0, tokens[0]);
        Assert.InRange(tokens[1], 32, 320);
        Assert.InRange(tokens[2], 16, 160);
        Assert.Equal(0, tokens[3]);

        // The report command regenerates the page from the files alone.
        File.Delete(Path.Combine(dir, "report.html"));
        var again = Run("report", dir);
        Assert.Equal(0, again.Code);
        Assert.Contains("report.html", again.Out);
        Assert.Contains("ppo_reward.png", File.ReadAllText(Path.Combine(dir, "report.html")));
    }

    [Fact]
    public void Threads_OptionThenEnvironmentThenCores_AndTorchRunsWithThem()
    {
        var before = Environment.GetEnvironmentVariable(CpuThreads.ThreadsVariable);
        try
        {
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, "1");
            Assert.Equal(1, CpuThreads.Configure(null));
            Assert.False(CpuThreads.Adaptive);                                      // the variable fixes the count
            Assert.Equal(2, CpuThreads.Configure(2));
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, null);
            Assert.Equal(Environment.ProcessorCount, CpuThreads.Configure(null));
            var stdout = new StringWriter();
            Assert.Equal(0, Cli.Cli.Run(["generate", "--model", Path.Combine(TestSupport.TrainedSortModel, "model"), "--prompt", "sort: ab", "--threads", "1"], stdout, new StringWriter()));
            Assert.Equal(1, TorchSharp.torch.get_num_threads());
        }
        finally
        {
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, before);
            CpuThreads.Configure(Environment.ProcessorCount);
        }
    }

    [Fact]
    public void Share_GivesUpTheCoresOtherProcessesKeepBusy_RoundedToWholeCores_AtLeastOne()
    {
        Assert.Equal(4, CpuThreads.Share(4, 0.0));
        Assert.Equal(4, CpuThreads.Share(4, 0.3));   // a passing blip takes no thread
        Assert.Equal(3, CpuThreads.Share(4, 0.5));
        Assert.Equal(3, CpuThreads.Share(4, 1.2));
        Assert.Equal(1, CpuThreads.Share(2, 1.0));   // two runs on two cores: one thread each
        Assert.Equal(1, CpuThreads.Share(2, 7.0));   // never below one
    }

    /// <summary>Skipped, visibly, where it cannot run: /proc/stat is Linux's, and one core has no thread to give back.</summary>
    public sealed class LinuxMultiCoreFact : FactAttribute
    {
        public LinuxMultiCoreFact()
        {
            if (!OperatingSystem.IsLinux()) Skip = "needs Linux (/proc/stat)";
            else if (Environment.ProcessorCount < 2) Skip = "needs at least 2 cores (one core has no thread to give back)";
        }
    }

    [LinuxMultiCoreFact]
    public void Adapt_GivesAThreadBackWhileAnotherProcessKeepsACoreBusy_AndAFixedCountNeverMoves()
    {
        var before = Environment.GetEnvironmentVariable(CpuThreads.ThreadsVariable);
        using var busy = System.Diagnostics.Process.Start("sh", ["-c", "while :; do :; done"]);
        try
        {
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, null);
            CpuThreads.Configure(null);
            Assert.True(CpuThreads.Adaptive);
            Assert.Null(CpuThreads.ForRun(null, TextWriter.Null));                  // adaptive: nothing to record
            Assert.True(TorchSharp.torch.get_num_threads() < Environment.ProcessorCount, "the start gives a thread back");
            CpuThreads.Adapt();                                                     // first look: starts the window
            Thread.Sleep(TimeSpan.FromSeconds(CpuThreads.WindowSeconds * 1.5));
            int threads = CpuThreads.Adapt();
            Assert.True(threads < Environment.ProcessorCount, $"{threads} threads beside a busy core, of {Environment.ProcessorCount}");
            Assert.Equal(threads, TorchSharp.torch.get_num_threads());
            Assert.Equal(Environment.ProcessorCount, CpuThreads.Budget);             // generation workers keep the budget

            CpuThreads.Configure(2);
            Assert.False(CpuThreads.Adaptive);
            Assert.Equal(2, CpuThreads.ForRun(null, TextWriter.Null));
            Thread.Sleep(TimeSpan.FromSeconds(CpuThreads.WindowSeconds * 1.5));
            Assert.Equal(2, CpuThreads.Adapt());
        }
        finally
        {
            busy.Kill();
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, before);
            CpuThreads.Configure(Environment.ProcessorCount);
        }
    }

    [Fact]
    public void ForRun_AResumeTakesTheRecordedFixedCount_AnExplicitOtherCountWarns()
    {
        var before = Environment.GetEnvironmentVariable(CpuThreads.ThreadsVariable);
        try
        {
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, null);
            CpuThreads.Configure(null);
            var log = new StringWriter();
            Assert.Equal(1, CpuThreads.ForRun(1, log));                              // the run's recorded count, fixed again
            Assert.False(CpuThreads.Adaptive);
            Assert.Equal(1, CpuThreads.Budget);
            Assert.Equal(1, TorchSharp.torch.get_num_threads());
            Assert.Empty(log.ToString());

            CpuThreads.Configure(2);
            Assert.Equal(2, CpuThreads.ForRun(1, log));                              // the explicit count, with a warning
            Assert.Contains("started with 1 threads and resumes with 2", log.ToString());
            Assert.Contains("not bit-identical", log.ToString());
        }
        finally
        {
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, before);
            CpuThreads.Configure(Environment.ProcessorCount);
        }
    }

    [Fact]
    public void EvalSamples_WritesOneLinePerPrompt_WhoseRewardsAverageToTheTotal()
    {
        var samples = Path.Combine(TestSupport.TempDir(), "samples.jsonl");
        var stdout = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["eval", "--model", Path.Combine(TestSupport.TrainedSortModel, "model"), "--data", Path.Combine(TestSupport.TrainedSortModel, "data", "eval.jsonl"),
            "--reward", "edit-distance", "--samples", samples], stdout, new StringWriter()));
        var total = System.Text.Json.JsonDocument.Parse(stdout.ToString()).RootElement;
        var rows = File.ReadAllLines(samples).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(total.GetProperty("n").GetInt32(), rows.Count);
        Assert.Equal(total.GetProperty("reward_mean").GetDouble(), rows.Average(r => r.GetProperty("reward").GetDouble()), 9);
        Assert.Equal(total.GetProperty("exact_match").GetDouble(), rows.Average(r => r.GetProperty("exact_match").GetBoolean() ? 1.0 : 0.0), 9);
        Assert.All(rows, r => Assert.StartsWith("sort: ", r.GetProperty("prompt").GetString()));
        Assert.All(rows, r => Assert.Equal(System.Text.Json.JsonValueKind.String, r.GetProperty("response").ValueKind));
    }

    [Fact]
    public void Resume_OfADifferentJob_IsRefusedNamingWhatChanged_TheSameJobMayRunLonger()
    {
        var root = TestSupport.TempDir();
        string dir = Path.Combine(root, "ppo"), prompts = Path.Combine(root, "prompts.jsonl");
        File.Copy(Path.Combine(TestSupport.TrainedSortModel, "data", "prompts.jsonl"), prompts);
        string[] Ppo(string reward, params string[] more) => ["ppo", "--data", prompts, "--init", Path.Combine(TestSupport.TrainedSortModel, "model"), "--reward", reward, "--out", dir,
            "--set", "batch_size=8", "--set", "num_mini_batches=2", "--set", "checkpoint_every=1", "--set", "response_length=8", .. more];
        (int Code, string Err) Run(string[] args) { var e = new StringWriter(); return (Cli.Cli.Run(args, new StringWriter(), e), e.ToString().Trim()); }

        Assert.Equal(0, Run(Ppo("edit-distance", "--set", "iterations=1")).Code);
        Assert.Equal((2, $"error: {dir}: --resume continues the same job only, and reward was \"edit-distance\", now \"exact-match\" (use --force to start over, or another --out)"),
            Run(Ppo("exact-match", "--resume", "--set", "iterations=2")));
        Assert.Contains("and config.lr was 0.0001, now 0.001", Run(Ppo("edit-distance", "--resume", "--set", "iterations=2", "--set", "lr=0.001")).Err);
        File.AppendAllText(prompts, File.ReadLines(prompts).First() + "\n");
        Assert.Contains("and data_sha256 was", Run(Ppo("edit-distance", "--resume", "--set", "iterations=2")).Err);
        File.WriteAllLines(prompts, File.ReadAllLines(prompts).SkipLast(1));
        Assert.Equal(0, Run(Ppo("edit-distance", "--resume", "--set", "iterations=2")).Code);                  // the same job, run longer
        Assert.Equal(2, File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Length);
    }

    [Fact]
    public void PpoEval_SavesTheHeldOutComparisonInSummaryJson_AndTheReportShowsIt()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "ppo");
        var data = Path.Combine(TestSupport.TrainedSortModel, "data");
        Assert.Equal(0, Cli.Cli.Run(["ppo", "--data", Path.Combine(data, "prompts.jsonl"), "--init", Path.Combine(TestSupport.TrainedSortModel, "model"), "--reward", "edit-distance",
            "--eval", Path.Combine(data, "eval.jsonl"), "--out", dir, "--set", "iterations=1", "--set", "batch_size=8", "--set", "num_mini_batches=2"], new StringWriter(), new StringWriter()));
        var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json"))).RootElement;
        Assert.Equal(File.ReadLines(Path.Combine(data, "eval.jsonl")).Count(), summary.GetProperty("eval_prompts").GetInt32());
        Assert.Equal(["edit-distance reward", "exact match", "response length (tokens)"], summary.GetProperty("table").EnumerateArray().Select(r => r.GetProperty("metric").GetString()));
        Assert.Equal(12, summary.GetProperty("samples").GetArrayLength());
        Assert.Equal(0, Cli.Cli.Run(["report", dir], new StringWriter(), new StringWriter()));
        Assert.Contains("edit-distance reward", File.ReadAllText(Path.Combine(dir, "report.html")));
    }

    [Fact]
    public void SkipInvalid_SkipsAndReportsRecordsLongerThanTheContext_InSftAndPpo()
    {
        var root = TestSupport.TempDir();
        var data = Path.Combine(TestSupport.TrainedSortModel, "data");
        var longText = new string('a', 500);
        var chat = TestSupport.WriteLines(root, "chat.jsonl", [.. File.ReadLines(Path.Combine(data, "sft.jsonl")).Take(20),
            $$"""{"messages":[{"role":"user","content":"{{longText}}"},{"role":"assistant","content":"a"}]}"""]);
        var prompts = TestSupport.WriteLines(root, "prompts.jsonl", [.. File.ReadLines(Path.Combine(data, "prompts.jsonl")).Take(20),
            $$"""{"messages":[{"role":"user","content":"{{longText}}"}],"solution":"a"}"""]);
        var model = Path.Combine(TestSupport.TrainedSortModel, "model");
        foreach (var args in new[]
                 {
                     new[] { "sft", "--init", model, "--data", chat, "--out", Path.Combine(root, "sft"), "--set", "steps=1", "--set", "batch_size=4" },
                     ["ppo", "--init", model, "--data", prompts, "--reward", "edit-distance", "--out", Path.Combine(root, "ppo"), "--set", "iterations=1", "--set", "batch_size=4", "--set", "num_mini_batches=2"],
                 })
        {
            var (stdout, stderr) = (new StringWriter(), new StringWriter());
            Assert.Equal(2, Cli.Cli.Run(args, new StringWriter(), stderr));                                 // without --skip-invalid: an error naming line 21
            Assert.Contains(":21: ", stderr.ToString());
            Assert.Equal(0, Cli.Cli.Run([.. args, "--skip-invalid"], stdout, new StringWriter()));
            Assert.Contains("warning: skipped 1 invalid record(s):", stdout.ToString());
            Assert.Contains(":21: ", stdout.ToString());
        }
    }
}
