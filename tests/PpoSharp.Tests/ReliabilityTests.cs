using System.Diagnostics;
using System.Text.Json;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class ReliabilityTests
{
    /// <summary>Metrics that measure time or memory differ between runs; every other key must match exactly.</summary>

    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");
    private static string Prompts => Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile);

    private static readonly string[] PpoSets =
        ["iterations=6", "batch_size=16", "num_mini_batches=2", "num_ppo_epochs=2", "response_length=8", "checkpoint_every=2", "keep_checkpoints=2", "lr=3e-4"];

    private static PpoConfig Config => ConfigLoader.Load(new PpoConfig(), null, PpoSets, c => c.Validate());

    private static List<Dictionary<string, JsonElement>> Rows(string dir) => MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));

    internal static void AssertSameMetrics(string expectedDir, string actualDir)
    {
        var expected = Rows(expectedDir);
        var actual = Rows(actualDir);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            foreach (var (key, value) in expected[i].Where(kv => !TestSupport.IsTiming(kv.Key)))
                Assert.True(actual[i].TryGetValue(key, out var other) && other.ToString() == value.ToString(),
                    $"row {i + 1} '{key}': {value} vs {(actual[i].TryGetValue(key, out var o) ? o.ToString() : "missing")}");
    }

    /// <summary>An uninterrupted 6-iteration PPO run, the yardstick for every resumed one (computed once).</summary>
    private static readonly Lazy<string> Uninterrupted = new(() =>
    {
        var dir = Path.Combine(TestSupport.TempDir(), "full");
        var prompts = Jsonl.ReadPrompts(Prompts).Records;
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), prompts, Config, TextWriter.Null);
        trainer.Train(dir);
        return dir;
    });

    [Fact]
    public void Interrupt_WritesCheckpointAndStops_ResumeGivesIdenticalMetrics()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "interrupted");
        var prompts = Jsonl.ReadPrompts(Prompts).Records;
        using var stop = StopSignal.Manual();
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new StopOnCall(stop, 3), prompts, Config, TextWriter.Null))
        {
            var e = Assert.Throws<TrainingStoppedException>(() => trainer.Train(dir, stop: stop));
            Assert.True(e.Interrupted);
            Assert.Contains("ppo: interrupted after iteration 3", e.Message);
            Assert.Contains("--resume", e.Message);
        }
        Assert.Equal("step-000003", File.ReadAllText(Path.Combine(dir, "checkpoints", "latest")));
        Assert.Equal(3, Rows(dir).Count);

        double beforeResume = Rows(dir)[^1]["elapsed_seconds"].GetDouble();
        PpoResult result;
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), prompts, Config, TextWriter.Null))
            result = resumed.Train(dir, resume: true);
        AssertSameMetrics(Uninterrupted.Value, dir);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Uninterrupted.Value, "model.safetensors")), File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        // completions.jsonl: every iteration's 16 completions once, as in the uninterrupted run (iteration 3's not twice).
        var completions = File.ReadAllLines(Path.Combine(dir, PpoTrainer.CompletionsFile));
        Assert.Equal(6 * 16, completions.Length);
        Assert.Equal(File.ReadAllLines(Path.Combine(Uninterrupted.Value, PpoTrainer.CompletionsFile)), completions);
        // The summary times the whole run: the clock goes on from the interrupted part, not from zero.
        var elapsed = Rows(dir).Select(r => r["elapsed_seconds"].GetDouble()).ToList();
        Assert.Equal(elapsed.Order(), elapsed);
        Assert.True(elapsed[3] > beforeResume, $"row 4 at {elapsed[3]} s, not after the first part's {beforeResume} s");
        Assert.Equal(elapsed[^1], result.Seconds);
    }

    [Fact]
    public void CorruptLatestCheckpoint_FallsBackToThePreviousWithWarning_StillIdentical()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "corrupt");
        var prompts = Jsonl.ReadPrompts(Prompts).Records;
        using var stop = StopSignal.Manual();
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new StopOnCall(stop, 4), prompts, Config, TextWriter.Null))
            Assert.Throws<TrainingStoppedException>(() => trainer.Train(dir, stop: stop));
        var checkpoints = Path.Combine(dir, "checkpoints");
        Assert.Equal(new[] { "step-000002", "step-000004" }, Directory.GetDirectories(checkpoints).Select(d => Path.GetFileName(d)!).Order().ToArray());
        var model = Path.Combine(checkpoints, "step-000004", "model.safetensors");
        File.WriteAllBytes(model, File.ReadAllBytes(model)[..100]);                   // truncated, as by a full disk

        var log = new StringWriter();
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), prompts, Config, log))
            resumed.Train(dir, resume: true);
        Assert.Contains("step-000004 is unusable", log.ToString());
        Assert.Contains("resuming at iteration 3 of", log.ToString());
        AssertSameMetrics(Uninterrupted.Value, dir);
    }

    /// <summary>
    /// A crash at each moment of the second checkpoint's write (iteration 4): with its tensors half-written in the
    /// unfinished folder, complete but not yet renamed, renamed but <c>latest</c> not flipped, and flipped. The resume
    /// continues from the last checkpoint <c>latest</c> names (never reading the unfinished one: no "unusable" warning)
    /// and ends with the metrics, completions and model bytes of the uninterrupted run.
    /// </summary>
    [Theory]
    [InlineData("checkpoint-filled", true, 3)]
    [InlineData("checkpoint-filled", false, 3)]
    [InlineData("checkpoint-renamed", false, 3)]
    [InlineData("checkpoint-flipped", false, 5)]
    public void CrashDuringCheckpointWrite_ResumeFromLastGoodCheckpoint_IdenticalRun(string moment, bool halfWritten, int resumeAt)
    {
        var dir = Path.Combine(TestSupport.TempDir(), "crashed");
        var prompts = Jsonl.ReadPrompts(Prompts).Records;
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), prompts, Config, TextWriter.Null))
            FaultInjectionTests.CrashAt(moment, 2, () => trainer.Train(dir), atCrash: folder =>
            {
                if (halfWritten) FaultInjectionTests.Halve(Path.Combine(folder, "model.safetensors"));
            });
        Assert.Equal($"step-{resumeAt - 1:D6}", File.ReadAllText(Path.Combine(dir, "checkpoints", "latest")));
        var log = new StringWriter();
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), prompts, Config, log))
            resumed.Train(dir, resume: true);
        Assert.DoesNotContain("unusable", log.ToString());
        Assert.Contains($"resuming at iteration {resumeAt} of 6", log.ToString());
        AssertSameMetrics(Uninterrupted.Value, dir);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Uninterrupted.Value, "model.safetensors")), File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        Assert.Equal(File.ReadAllLines(Path.Combine(Uninterrupted.Value, PpoTrainer.CompletionsFile)), File.ReadAllLines(Path.Combine(dir, PpoTrainer.CompletionsFile)));
        Assert.Empty(Directory.GetDirectories(Path.Combine(dir, "checkpoints"), ".tmp-*"));
    }

    [Fact]
    public void SigKill_MidRun_ThenResume_GivesIdenticalMetrics()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "killed");
        string[] args = ["ppo", "--data", Prompts, "--init", Init, "--reward", "edit-distance", "--out", dir, .. PpoSets.SelectMany(s => new[] { "--set", s })];
        KillAt(args, "iteration:6");                       // iterations 1-5 done, checkpoint at 4: row 5 is redone
        Assert.Equal(5, Rows(dir).Count);
        Assert.Equal("step-000004", File.ReadAllText(Path.Combine(dir, "checkpoints", "latest")));
        var (code, _, errors) = RunInProcess([.. args, "--resume"]);
        Assert.True(code == 0, errors);
        AssertSameMetrics(Uninterrupted.Value, dir);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Uninterrupted.Value, "model.safetensors")), File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
    }

    /// <summary>The CLI arguments of a short grpo or dpo run into <paramref name="dir"/>, with a checkpoint every few steps.</summary>
    private static string[] RunArgs(string command, string dir) => command switch
    {
        "grpo" => ["grpo", "--data", Prompts, "--init", Init, "--reward", "edit-distance", "--out", dir,
            .. new[] { "iterations=6", "batch_size=4", "num_generations=4", "max_completion_length=8", "checkpoint_every=2", "lr=3e-4" }.SelectMany(s => new[] { "--set", s })],
        "ppo-lora" => ["ppo", "--data", Prompts, "--init", Init, "--reward", "edit-distance", "--out", dir,
            .. PpoSets.Concat(["lora_r=4", "lora_target_modules=all-linear"]).SelectMany(s => new[] { "--set", s })],
        _ => ["dpo", "--data", FewPairs.Value, "--init", Init, "--out", dir,
            .. new[] { "steps=60", "batch_size=16", "checkpoint_every=20", "eval_every=30" }.SelectMany(s => new[] { "--set", s })],
    };

    /// <summary>The first 300 preference pairs of the flawed model's data (the reference pass over all 4000 is slow).</summary>
    private static readonly Lazy<string> FewPairs = new(() =>
    {
        var path = Path.Combine(TestSupport.TempDir(), TaskData.PreferencesFile);
        File.WriteAllLines(path, File.ReadLines(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PreferencesFile)).Take(300));
        return path;
    });

    [Theory]
    [InlineData("grpo", 5)]
    [InlineData("dpo", 50)]
    [InlineData("ppo-lora", 5)]
    public void SigKill_MidRun_ThenResume_GivesIdenticalMetricsAndModel_GrpoDpoAndLora(string command, int killAt)
    {
        var full = Path.Combine(TestSupport.TempDir(), "full");
        var uninterrupted = RunInProcess(RunArgs(command, full));
        Assert.True(uninterrupted.Code == 0, uninterrupted.Err);
        var dir = Path.Combine(TestSupport.TempDir(), "killed");
        KillAt(RunArgs(command, dir), $"iteration:{killAt + 1}");
        Assert.Equal(killAt, Rows(dir).Count);
        var (code, _, errors) = RunInProcess([.. RunArgs(command, dir), "--resume"]);
        Assert.True(code == 0, errors);
        AssertSameMetrics(full, dir);
        foreach (var file in command == "ppo-lora" ? new[] { "adapter_model.safetensors", "critic/adapter_model.safetensors" } : ["model.safetensors"])
            Assert.Equal(File.ReadAllBytes(Path.Combine(full, file)), File.ReadAllBytes(Path.Combine(dir, file)));
    }

    /// <summary>
    /// The README's DPO promise: the reference log-probs are computed once and read back by <c>--resume</c>, so a run
    /// killed with 1 thread and resumed with the machine's count uses the first part's very values (the file is
    /// neither rewritten nor changed). Bit-identical weights are promised only for the same count (the test above): a
    /// resume given another fixed count than the one job.json recorded says so.
    /// </summary>
    [Fact]
    public void Dpo_ResumedWithAnotherThreadCount_ReadsBackTheFirstPartsReferenceLogps()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "dpo");
        KillAt([.. RunArgs("dpo", dir), "--threads", "1"], "iteration:31");                // checkpoint at step 20
        var reference = Path.Combine(dir, DpoTrainer.ReferenceFile);
        var (bytes, written) = (File.ReadAllBytes(reference), File.GetLastWriteTimeUtc(reference));
        Assert.Equal(1, Rows(dir)[0]["threads"].GetInt32());
        var (code, _, errors) = RunInProcess([.. RunArgs("dpo", dir), "--resume"]);       // PPOSHARP_THREADS: every core
        Assert.True(code == 0, errors);
        if (Environment.ProcessorCount > 1) Assert.Contains("started with 1 threads and resumes with", errors);   // another count, said
        Assert.Equal(bytes, File.ReadAllBytes(reference));
        Assert.Equal(written, File.GetLastWriteTimeUtc(reference));
        Assert.Equal(Environment.ProcessorCount, Rows(dir)[^1]["threads"].GetInt32());
        Assert.Equal(60, Rows(dir).Count);
    }

    [Fact]
    public void SigTerm_WritesCheckpoint_ExitsWithResumeHint()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "terminated");
        string[] args = ["ppo", "--data", Prompts, "--init", Init, "--reward", "edit-distance", "--out", dir,
            .. PpoSets.Select(s => s.Replace("iterations=6", "iterations=200")).SelectMany(s => new[] { "--set", s })];
        using var process = TestSupport.StartCli(args);
        var metrics = Path.Combine(dir, MetricsWriter.FileName);
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(metrics) && File.ReadAllLines(metrics).Length >= 1) && clock.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(20);
        Process.Start("kill", ["-TERM", process.Id.ToString()])!.WaitForExit();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(1)));
        var errors = process.StandardError.ReadToEnd();
        Assert.Equal(130, process.ExitCode);
        Assert.Contains("ppo: interrupted after iteration", errors);
        Assert.Contains("--resume", errors);
        int done = Rows(dir).Count;
        Assert.Equal($"step-{done:D6}", File.ReadAllText(Path.Combine(dir, "checkpoints", "latest")));
    }

    [Fact]
    public void Sft_NanLoss_IsSkippedAndCounted_TrainingContinues()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "nan");
        var records = Jsonl.ReadChat(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.SftFile)).Records.Take(200).ToList();
        var config = TestSupport.TinySft(8) with { CheckpointEvery = 100 };
        var tokenizer = SftTrainer.NewTokenizer(TokenizerKind.Char, records);
        manual_seed(1);
        var model = new Models.Decoder(config.ModelConfig(tokenizer.VocabSize));
        int calls = 0;
        var trainer = new SftTrainer(config, TextWriter.Null) { LossFault = l => ++calls is 3 or 4 ? l * float.NaN : l };
        trainer.Train(model, tokenizer, SftTrainer.Tokenize(records, tokenizer, 32), dir);
        var rows = Rows(dir);
        Assert.Equal(8, rows.Count);
        Assert.Equal(new long[] { 0, 0, 1, 2, 2, 2, 2, 2 }, rows.Select(r => r["skipped_steps"].GetInt64()).ToArray());
        Assert.True(double.IsFinite(rows[^1]["loss"].GetDouble()));
        Assert.True(model.parameters().All(p => p.isfinite().all().item<bool>()));
    }

    [Fact]
    public void Ppo_NonFiniteStepsInARow_StopWithCheckpointAndClearMessage()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "nan-ppo");
        var prompts = Jsonl.ReadPrompts(Prompts).Records;
        var config = Config with { MaxSkippedSteps = 3 };
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), prompts, config, TextWriter.Null);
        trainer.LossFault = l => l * float.NaN;
        var e = Assert.Throws<TrainingStoppedException>(() => trainer.Train(dir));
        Assert.False(e.Interrupted);
        Assert.Contains("3 optimizer steps in a row had a non-finite loss or gradient", e.Message);
        Assert.Equal(3, Rows(dir)[^1]["skipped_steps"].GetInt64());
        Assert.True(Directory.Exists(Path.Combine(dir, "checkpoints", "step-000001")));
        Assert.True(trainer.Actor.parameters().All(p => p.isfinite().all().item<bool>()));
    }

    /// <summary>
    /// A fixed thread count is recorded in job.json and taken back by --resume: an SFT run with PPOSHARP_THREADS=1,
    /// SIGKILLed, then resumed with the variable unset on an idle machine (the seam PPOSHARP_TEST_BUSY_CORES=0: a fresh
    /// choice would take every core) ends with the metrics and model bytes of a run never stopped. This run's weights
    /// differ with 1 and with 2 threads, so the count is what is tested.
    /// </summary>
    [CliTests.LinuxMultiCoreFact]
    public void FixedThreads_ResumedWithoutThem_KeepTheRunsCount_IdenticalToUninterrupted()
    {
        var root = TestSupport.TempDir();
        var data = Path.Combine(root, TaskData.SftFile);
        File.WriteAllLines(data, File.ReadLines(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.SftFile)).Take(200));
        string[] Args(string dir) => ["sft", "--data", data, "--out", dir, .. new[] { "steps=8", "batch_size=8", "d_model=16", "n_layer=1",
            "n_head=2", "context_length=32", "warmup_steps=2", "checkpoint_every=2" }.SelectMany(s => new[] { "--set", s })];
        Dictionary<string, string> Threads(string count) => new() { [CpuThreads.ThreadsVariable] = count, [CpuThreads.BusyCoresVariable] = "0" };
        var full = Path.Combine(root, "full");
        RunChild(Args(full), Threads("1"));
        var dir = Path.Combine(root, "killed");
        KillAt(Args(dir), "iteration:6", Threads("1"));                                  // steps 1-5 done, checkpoint at 4
        RunChild([.. Args(dir), "--resume"], Threads(""));
        FaultInjectionTests.AssertSameRun(full, dir);
        Assert.All(Rows(dir), row => Assert.Equal(1, row["threads"].GetInt32()));
        Assert.Equal(1, RunJob.RecordedThreads(dir));
    }

    private static void RunChild(string[] args, IReadOnlyDictionary<string, string> environment)
    {
        using var process = TestSupport.StartCli(args, environment);
        var errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, errors);
    }

    [Fact]
    public void Resume_WithoutCheckpoint_IsAClearError()
    {
        var dir = TestSupport.TempDir();
        var (code, _, errors) = RunInProcess(["ppo", "--data", Prompts, "--init", Init, "--reward", "edit-distance", "--out", dir, "--resume"]);
        Assert.Equal(2, code);
        Assert.Contains("no checkpoint to resume from", errors);
    }

    /// <summary>
    /// Runs the CLI in a child process that blocks at <paramref name="moment"/> (the test seam <see cref="FaultPoint"/>,
    /// e.g. <c>iteration:6</c>: before iteration 6 starts) and SIGKILLs it there, so the kill point cannot race the run.
    /// </summary>
    internal static void KillAt(string[] args, string moment, IReadOnlyDictionary<string, string>? environment = null)
    {
        using var process = TestSupport.StartCli(args, new Dictionary<string, string>(environment ?? new Dictionary<string, string>()) { [FaultPoint.Variable] = moment });
        var blocked = Task.Run(() =>
        {
            for (string? line; (line = process.StandardError.ReadLine()) != null;)
                if (line.StartsWith($"{FaultPoint.Variable}: blocked at {moment}", StringComparison.Ordinal)) return true;
            return false;
        });
        bool reached = blocked.Wait(TimeSpan.FromMinutes(3)) && blocked.Result;
        if (!process.HasExited) process.Kill();                                         // SIGKILL
        process.WaitForExit();
        Assert.True(reached, $"the run ended (exit code {process.ExitCode}) without reaching {moment}");
    }


    private static (int Code, string Out, string Err) RunInProcess(string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        return (Cli.Cli.Run(args, stdout, stderr), stdout.ToString(), stderr.ToString());
    }
}
