using System.Diagnostics;
using PpoSharp.Training;

namespace PpoSharp.Benchmarks;

public static partial class Bench
{
    /// <summary>The line a competing copy prints when its PPO loop starts.</summary>
    public const string CopyReadyLine = "bench-copy: running";

    /// <summary>
    /// The competing copy's work (<c>bench --as-copy</c>): the bench's PPO iterations without end, until it is killed or
    /// its standard input closes (the bench that started it has ended, however it ended).
    /// </summary>
    public static void RunAsCopy(TextWriter log, TextReader input)
    {
        new Thread(() =>
        {
            while (input.ReadLine() is not null) { }
            Environment.Exit(0);
        }) { IsBackground = true }.Start();
        var dir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{Environment.ProcessId}");
        try
        {
            var prompts = PpoSetup(dir);
            log.WriteLine(CopyReadyLine);
            log.Flush();
            RunPpo(dir, "copy", prompts, new PpoConfig { Iterations = 1_000_000, CheckpointEvery = 1_000_000 });
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// A PPO iteration alone, then beside a copy of this program doing the same with as many threads (two training runs
    /// on one machine). Each wants every core, so the fair share is 2x the time alone; the goal is at most 1.3x that.
    /// <paramref name="startSelf"/> starts <c>bench --as-copy</c>; null (inside a test host) leaves the figure out.
    /// </summary>
    private static void BesideCopyFigures(Dictionary<string, object> r, int iterations, Func<string[], Process>? startSelf, TextWriter log)
    {
        if (startSelf is null) return;
        var dir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{Environment.ProcessId}-beside");
        try
        {
            var prompts = PpoSetup(dir);
            var config = new PpoConfig { Iterations = iterations, CheckpointEvery = 1000 };
            double alone = IterationSeconds(RunPpo(dir, "alone", prompts, config));
            using var copy = startSelf(["bench", "--as-copy"]);
            try
            {
                WaitForReady(copy);
                double beside = IterationSeconds(RunPpo(dir, "beside", prompts, config));
                (r["ppo_iteration_seconds_alone"], r["ppo_iteration_seconds_beside_copy"], r["beside_copy_slowdown"]) = (alone, beside, beside / alone);
                log.WriteLine($"bench: PPO iteration beside a competing copy of itself: {beside:F2} s vs {alone:F2} s alone, {beside / alone:F2}x "
                    + "(fair share 2x; goal at most 2.6x)");
            }
            finally
            {
                copy.Kill(entireProcessTree: true);
                copy.WaitForExit();
                var copyDir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{copy.Id}"); // a killed copy cannot clean up
                if (Directory.Exists(copyDir)) Directory.Delete(copyDir, recursive: true);
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Reads the copy's output until its ready line (its startup is not part of the contention measured).</summary>
    private static void WaitForReady(Process copy)
    {
        for (string? line; (line = copy.StandardOutput.ReadLine()) is not null;)
            if (line == CopyReadyLine) return;
        throw new PpoSharpException($"bench: the competing copy exited ({copy.ExitCode}) before it started: {copy.StandardError.ReadToEnd().Trim()}");
    }

    /// <summary>
    /// Starts this program again with <paramref name="args"/> (<c>bench --as-copy</c>, a LoRA bench case), with
    /// <c>--threads N</c> when this one has a fixed count (else the child follows the load as this one does): the same
    /// executable, or `dotnet` with the same entry assembly.
    /// </summary>
    public static Process StartSelf(string[] args)
    {
        var info = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet")
            info.ArgumentList.Add(System.Reflection.Assembly.GetEntryAssembly()!.Location);
        foreach (var arg in CpuThreads.Adaptive ? args : [.. args, "--threads", CpuThreads.Budget.ToString(System.Globalization.CultureInfo.InvariantCulture)])
            info.ArgumentList.Add(arg);
        return Process.Start(info)!;
    }
}
