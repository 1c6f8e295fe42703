using System.Diagnostics;
using System.Text.Json;
using PpoSharp.Data;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>What a test's <see cref="FaultPoint.Hook"/> throws to stop a run at a moment, as a crash would.</summary>
internal sealed class SimulatedCrash(string moment) : Exception($"simulated crash at {moment}");

/// <summary>
/// Crashes at each moment of a file write, a folder swap and the reward model's best-weights swap (through the
/// <see cref="FaultPoint"/> seam), then the recovery; and SIGKILLs at random moments of a run, then <c>--resume</c>.
/// </summary>
public class FaultInjectionTests
{
    /// <summary>Runs <paramref name="run"/> with a hook that calls <paramref name="atCrash"/> and throws on the n-th time <paramref name="moment"/> is reached.</summary>
    internal static void CrashAt(string moment, int n, Action run, Action<string>? atCrash = null, Func<string, bool>? where = null)
    {
        int seen = 0;
        FaultPoint.Hook = (m, path) =>
        {
            if (m != moment || where?.Invoke(path) == false || ++seen != n) return;
            atCrash?.Invoke(path);
            throw new SimulatedCrash(m);
        };
        try { Assert.Throws<SimulatedCrash>(run); }
        finally { FaultPoint.Hook = null; }
    }

    /// <summary>Runs the CLI in-process where a hook will crash it: the CLI reports the crash as an internal error (exit 1), rethrown here.</summary>
    internal static void RunCliToCrash(string[] args)
    {
        var output = new StringWriter();
        int code = Cli.Cli.Run(args, output, output);
        if (code == 1 && output.ToString().Contains($"internal error: {nameof(SimulatedCrash)}")) throw new SimulatedCrash("cli");
        Assert.Fail($"exit code {code} without the simulated crash: {output}");
    }

    /// <summary>Cuts a file to half its length, as a kill in the middle of writing it leaves it.</summary>
    internal static void Halve(string path) => File.WriteAllBytes(path, File.ReadAllBytes(path)[..(int)(new FileInfo(path).Length / 2)]);

    [Fact]
    public void AtomicWrite_CrashWithTheNewFileHalfWritten_OldFileIntactAndNoTemporaryLeft()
    {
        var path = Path.Combine(TestSupport.TempDir(), "state.json");
        File.WriteAllText(path, "{\"step\": 2}");
        CrashAt("file-written", 1, () => AtomicFile.WriteText(path, "{\"step\": 4, \"padding\": \"" + new string('x', 1000) + "\"}"), Halve);
        Assert.Equal("{\"step\": 2}", File.ReadAllText(path));
        Assert.False(File.Exists(path + ".tmp"));
    }

    /// <summary>
    /// A crash at each moment of <see cref="AtomicFile.ReplaceFolder"/>: before the swap the old folder stays, once the old
    /// one is moved aside the new one is put in place; either way the folder is complete and nothing is left beside it.
    /// </summary>
    [Theory]
    [InlineData("folder-filled", "old")]
    [InlineData("folder-moved-aside", "new")]
    [InlineData("folder-swapped", "new")]
    public void ReplaceFolder_CrashAtEachMoment_RecoverLeavesOneCompleteFolderAndNoLeftovers(string moment, string expected)
    {
        var dir = Path.Combine(TestSupport.TempDir(), "best");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "weights"), "old");
        File.WriteAllText(Path.Combine(dir, "marker"), "old");
        CrashAt(moment, 1, () => AtomicFile.ReplaceFolder(dir, tmp =>
        {
            Directory.CreateDirectory(tmp);
            File.WriteAllText(Path.Combine(tmp, "weights"), "new");
            File.WriteAllText(Path.Combine(tmp, "marker"), "new");                          // last, as the real writers do
        }));
        AtomicFile.RecoverFolder(dir, "marker");
        Assert.Equal(expected, File.ReadAllText(Path.Combine(dir, "weights")));
        Assert.Equal(expected, File.ReadAllText(Path.Combine(dir, "marker")));
        Assert.False(Directory.Exists(dir + ".tmp"));
        Assert.False(Directory.Exists(dir + ".old"));
    }

    [Fact]
    public void ReplaceFolder_CrashWhileFillingTheNewOne_OldFolderKept()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "best");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "marker"), "old");
        Assert.Throws<SimulatedCrash>(() => AtomicFile.ReplaceFolder(dir, tmp =>
        {
            Directory.CreateDirectory(tmp);
            File.WriteAllText(Path.Combine(tmp, "weights"), "ne");                           // half-written, no marker yet
            throw new SimulatedCrash("fill");
        }));
        AtomicFile.RecoverFolder(dir, "marker");
        Assert.Equal("old", File.ReadAllText(Path.Combine(dir, "marker")));
        Assert.False(Directory.Exists(dir + ".tmp"));
    }

    /// <summary>A checkpoint at every evaluation, so that a crash at the second best-weights swap comes after a checkpoint (a
    /// run that fails before its first one removes what it wrote, which a real kill never gets to do).</summary>
    private static readonly string[] RmSets =
        ["steps=30", "batch_size=16", "lr=1e-3", "warmup_steps=2", "eval_every=3", "eval_fraction=0.2", "checkpoint_every=3"];

    /// <summary>300 preference pairs of the sort task (enough for a 30-step reward model).</summary>
    private static readonly Lazy<string> Pairs = new(() =>
    {
        var path = Path.Combine(TestSupport.TempDir(), TaskData.PreferencesFile);
        File.WriteAllLines(path, File.ReadLines(Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.PreferencesFile)).Take(300));
        return path;
    });

    private static string[] RmArgs(string dir, params string[] extra) =>
        ["rm", "--data", Pairs.Value, "--init", Path.Combine(TestSupport.TrainedSortModel, "model"), "--out", dir,
            .. RmSets.SelectMany(s => new[] { "--set", s }), .. extra];

    /// <summary>An uninterrupted reward-model run and how many times it replaced its best weights.</summary>
    private static readonly Lazy<(string Dir, int Swaps)> RmUninterrupted = new(() =>
    {
        var dir = Path.Combine(TestSupport.TempDir(), "rm-full");
        int swaps = 0;
        FaultPoint.Hook = (m, path) => { if (m == "folder-swapped" && Path.GetFileName(path) == "best") swaps++; };
        try { Assert.Equal(0, Cli.Cli.Run(RmArgs(dir), TextWriter.Null, TextWriter.Null)); }
        finally { FaultPoint.Hook = null; }
        return (dir, swaps);
    });

    /// <summary>
    /// The reward model's best weights (load_best_model_at_end) half swapped when the process dies: the old best moved
    /// aside, the new one not yet in place. <c>rm --resume</c> finishes the swap (RecoverFolder), continues from the
    /// last checkpoint, and ends with the same model, card and metrics as a run that was never stopped.
    /// </summary>
    [Theory]
    [InlineData("folder-moved-aside")]
    [InlineData("folder-filled")]
    public void Rm_CrashMidBestWeightsSwap_ResumeFinishesTheSwap_SameModelAsUninterrupted(string moment)
    {
        var (full, swaps) = RmUninterrupted.Value;
        Assert.True(swaps >= 2, $"the run replaced its best weights {swaps} times; the test needs a second replacement to cut short");
        var dir = Path.Combine(TestSupport.TempDir(), "rm-crashed");
        CrashAt(moment, 2, () => RunCliToCrash(RmArgs(dir)), where: p => Path.GetFileName(p).StartsWith("best", StringComparison.Ordinal));
        Assert.Equal(moment == "folder-moved-aside", !Directory.Exists(Path.Combine(dir, "best")));  // the half-done swap
        Assert.True(Directory.Exists(Path.Combine(dir, "best.tmp")));

        var errors = new StringWriter();
        Assert.True(Cli.Cli.Run(RmArgs(dir, "--resume"), errors, errors) == 0, errors.ToString());
        Assert.DoesNotContain("unusable", errors.ToString());
        AssertSameRun(full, dir);
        foreach (var leftover in new[] { "best", "best.tmp", "best.old" }) Assert.False(Directory.Exists(Path.Combine(dir, leftover)), leftover);
    }

    [Fact]
    public void Rm_InterruptedThenResumed_SameModelAndMetricsAsUninterrupted()
    {
        var (full, _) = RmUninterrupted.Value;
        var dir = Path.Combine(TestSupport.TempDir(), "rm-interrupted");
        CrashAt("iteration", 16, () => RunCliToCrash(RmArgs(dir)));  // steps 1-15 done, checkpoints every 3 steps (the last at 15)
        Assert.Equal(15, MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName)).Count);
        var log = new StringWriter();
        Assert.True(Cli.Cli.Run(RmArgs(dir, "--resume"), log, log) == 0, log.ToString());
        Assert.Contains("rm: resuming at step 16 of 30", log.ToString());
        AssertSameRun(full, dir);
    }

    /// <summary>Same metrics (timings aside) and the same bytes in every model, card and config file at the top of the run folder.</summary>
    internal static void AssertSameRun(string expectedDir, string actualDir)
    {
        ReliabilityTests.AssertSameMetrics(expectedDir, actualDir);
        var files = Directory.GetFiles(expectedDir).Select(Path.GetFileName)
            .Where(f => f!.EndsWith(".safetensors", StringComparison.Ordinal) || f is RewardModelCard.FileName).ToList();
        Assert.Contains(RunDirectory.ModelFile, files);
        foreach (var f in files)
            Assert.True(File.ReadAllBytes(Path.Combine(expectedDir, f!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actualDir, f!))), $"{f} differs");
    }

    /// <summary>A small SFT run from scratch with a checkpoint after every step, so that a kill can land in any part of one.</summary>
    private static string[] SftArgs(string data, string dir) =>
        ["sft", "--data", data, "--out", dir, .. new[] { "steps=8", "batch_size=8", "d_model=16", "n_layer=1", "n_head=2", "context_length=32",
            "warmup_steps=2", "checkpoint_every=1", "keep_checkpoints=2", "eval_every=1000" }.SelectMany(s => new[] { "--set", s })];

    /// <summary>
    /// 20 SIGKILLs at random moments (seeded) of a run, each followed by <c>--resume</c>: every resumed run ends with the
    /// metrics and model bytes of a run that was never stopped. The kill time is drawn uniformly over the training part
    /// of an uninterrupted child run (from its first metrics row to its exit), so kills land in steps and in checkpoint
    /// writes alike; a kill before the first checkpoint must leave "no checkpoint to resume from".
    /// </summary>
    [Fact]
    public void Sft_SigKillAtRandomMoments_20Seeds_ResumeEndsIdenticalToUninterrupted()
    {
        var root = TestSupport.TempDir();
        var data = Path.Combine(root, "sft.jsonl");
        File.WriteAllLines(data, File.ReadLines(Path.Combine(TestSupport.TrainedSortModel, "data", TaskData.SftFile)).Take(200));
        var full = Path.Combine(root, "full");
        var trainSeconds = RunChild(SftArgs(data, full), killAfter: null);
        int killed = 0, fromScratch = 0;
        for (int seed = 0; seed < 20; seed++)
        {
            var dir = Path.Combine(root, $"seed-{seed}");
            var delay = new Random(seed).NextDouble() * trainSeconds;
            if (RunChild(SftArgs(data, dir), killAfter: delay) >= 0) continue;                  // it finished first
            killed++;
            var log = new StringWriter();
            int code = Cli.Cli.Run([.. SftArgs(data, dir), "--resume"], log, log);
            if (code == 2 && log.ToString().Contains("no checkpoint to resume from")) { fromScratch++; continue; }
            Assert.True(code == 0, $"seed {seed} (killed after {delay:F2} s): {log}");
            Assert.DoesNotContain("unusable", log.ToString());
            AssertSameRun(full, dir);
            Directory.Delete(dir, recursive: true);
        }
        Assert.True(killed - fromScratch >= 5, $"{killed} of 20 runs killed mid-run, {fromScratch} before their first checkpoint");
    }

    /// <summary>
    /// Runs the CLI in a child process. Without <paramref name="killAfter"/>: waits for it to finish and returns the
    /// seconds from its first metrics row to its exit. With it: SIGKILLs it that many seconds after its first metrics
    /// row and returns -1, or the exit time as above when it finished first.
    /// </summary>
    private static double RunChild(string[] args, double? killAfter)
    {
        using var process = TestSupport.StartCli(args);
        process.ErrorDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        var metrics = Path.Combine(args[Array.IndexOf(args, "--out") + 1], MetricsWriter.FileName);
        var limit = Stopwatch.StartNew();
        while (!File.Exists(metrics) && !process.HasExited && limit.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(2);
        var clock = Stopwatch.StartNew();
        if (killAfter is double seconds && !process.WaitForExit(TimeSpan.FromSeconds(seconds)))
        {
            process.Kill();                                                                     // SIGKILL
            process.WaitForExit();
            return -1;
        }
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)));
        Assert.Equal(0, process.ExitCode);
        return clock.Elapsed.TotalSeconds;
    }
}
