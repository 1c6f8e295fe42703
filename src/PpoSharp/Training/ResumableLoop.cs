namespace PpoSharp.Training;

/// <summary>Deterministic seeds derived from a run's seed (unlike HashCode, identical in every process).</summary>
public static class Seeds
{
    /// <summary>SplitMix64 of (seed, index), folded to an int: the seed of one step's or one data pass's random choices.</summary>
    public static int Derive(int seed, int index)
    {
        ulong z = unchecked((ulong)(uint)seed * 0x9E3779B97F4A7C15UL + (ulong)(uint)index + 0x632BE59BD9B4E019UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }
}

/// <summary>
/// The step loop shared by SFT, reward-model and PPO training: resume from the newest usable checkpoint, one metrics
/// row per step, a checkpoint every <c>checkpointEvery</c> steps and at the end, and an early stop with a checkpoint
/// on Ctrl+C / SIGTERM or when the trainer reports a reason (too many non-finite steps).
/// </summary>
public sealed record ResumableLoop(string Title, int Total, string OutDir, int CheckpointEvery, int KeepCheckpoints, TextWriter Log)
{
    /// <summary>What one step is called in messages: PPO and the critic-free trainers count iterations, the supervised trainers (sft, rm, dpo) steps.</summary>
    private string Unit => Title is "sft" or "rm" or "dpo" ? "step" : "iteration";

    /// <param name="resume">Continue from the newest usable checkpoint.</param>
    /// <param name="stop">Ctrl+C / SIGTERM request, checked after each step.</param>
    /// <param name="step">Runs step i (1-based) and returns its metrics row.</param>
    /// <param name="status">Progress text of a row.</param>
    /// <param name="save">Fills a checkpoint folder with the state after step i.</param>
    /// <param name="restore">Restores a checkpoint folder, returning its step (throws <see cref="PpoSharpException"/> if unusable).</param>
    /// <param name="failure">After each step: a reason to stop, or null.</param>
    /// <returns>
    /// The run's wall-clock seconds, earlier processes included: each row gets <c>elapsed_seconds</c>, counted on from
    /// the last row kept at a resume, so a resumed run's summary times the whole run, not only its last part.
    /// </returns>
    public double Run(bool resume, StopSignal? stop, Func<int, Dictionary<string, object>> step, Func<Dictionary<string, object>, string> status,
        Action<string, int> save, Func<string, int> restore, Func<string?> failure)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Directory.CreateDirectory(OutDir);
        int start = 1;
        double before = 0;
        if (resume)
        {
            start = Checkpoints.Resume(OutDir, Log, dir =>
            {
                int done = restore(dir);
                Checkpoints.TruncateMetrics(OutDir, done);
                return done;
            }) + 1;
            Log.WriteLine($"{Title}: resuming at {Unit} {start} of {Total}");
            before = ElapsedBefore(Path.Combine(OutDir, MetricsWriter.FileName));
        }
        double elapsed = before;
        using var metrics = new MetricsWriter(Path.Combine(OutDir, MetricsWriter.FileName));
        ProgressBar.Run(Title, Total, Log, report =>
        {
            for (int i = start; i <= Total; i++)
            {
                FaultPoint.Reach("iteration", OutDir);
                var row = step(i);
                row[ElapsedKey] = elapsed = before + clock.Elapsed.TotalSeconds;
                row["threads"] = TorchSharp.torch.get_num_threads();
                CpuThreads.Adapt();
                metrics.Write(row);
                report(i, status(row));
                var reason = failure();
                bool stopping = stop?.Requested == true || reason != null;
                if (i % CheckpointEvery == 0 || i == Total || stopping)
                    Checkpoints.Save(OutDir, i, KeepCheckpoints, dir => save(dir, i));
                if (reason != null)
                    throw new TrainingStoppedException($"{Title}: stopped after {Unit} {i}: {reason}; checkpoint written in {Checkpoints.Root(OutDir)}", false);
                if (stopping && i < Total)
                    throw new TrainingStoppedException($"{Title}: interrupted after {Unit} {i}; checkpoint written; continue with the same command and --resume", true);
            }
        });
        return elapsed;
    }

    public const string ElapsedKey = "elapsed_seconds";

    /// <summary>The last kept row's elapsed_seconds (0 when there is none, e.g. a run from before the key existed).</summary>
    private static double ElapsedBefore(string metricsPath)
    {
        var rows = File.Exists(metricsPath) ? MetricsWriter.Read(metricsPath) : [];
        return rows.Count > 0 && rows[^1].TryGetValue(ElapsedKey, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.Number ? v.GetDouble() : 0;
    }
}
