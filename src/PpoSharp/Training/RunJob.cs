using System.Security.Cryptography;
using System.Text.Json.Nodes;

namespace PpoSharp.Training;

/// <summary>
/// What defines a training run, recorded in <c>DIR/job.json</c> when it starts: the command, the model it starts from,
/// the data file (path and SHA-256), the rewards and the config. <c>--resume</c> continues only the same job: anything
/// else changed is refused in one line naming it. Keys that may grow or change on a resume (steps, iterations, the
/// checkpoint and eval schedule) are left out.
/// </summary>
public sealed class RunJob
{
    public const string FileName = "job.json";
    private static readonly string[] Resumable = ["steps", "iterations", "checkpoint_every", "keep_checkpoints", "max_skipped_steps", "eval_every"];
    private readonly JsonObject _fields = [];

    /// <summary>A job of <paramref name="command"/> with <paramref name="config"/>; add its inputs with <see cref="With"/>.</summary>
    public RunJob(string command, object config)
    {
        _fields["command"] = command;
        var settings = System.Text.Json.JsonSerializer.SerializeToNode(config, config.GetType(), Json.Options)!.AsObject();
        Total = settings["num_train_epochs"] is null ? (settings["steps"] ?? settings["iterations"])?.GetValue<int>() : null;   // from epochs: known once the data is read
        Ensemble = settings["ensemble"]?.GetValue<int>() ?? 1;
        foreach (var key in Resumable) settings.Remove(key);
        _fields["config"] = settings;
    }

    /// <summary>A line the run prints once its inputs have passed every check (a default chosen for the user), or null.</summary>
    public string? Note { get; set; }

    /// <summary>Prints <see cref="Note"/>, if any: among the run's first lines, and only for a run that starts.</summary>
    public void Announce(TextWriter log)
    {
        if (Note is not null) log.WriteLine(Note);
    }

    /// <summary>The command the job runs (sft, rm, dpo, ppo, grpo).</summary>
    public string Command => _fields["command"]!.GetValue<string>();

    /// <summary>The steps (or iterations) the run is to make: its config's <c>steps</c> or <c>iterations</c>; with num_train_epochs, null until <see cref="Resolve"/>.</summary>
    public int? Total { get; private set; }

    /// <summary>Sets <see cref="Total"/> to the steps the trainer counted from the data (num_train_epochs).</summary>
    public void Resolve(int steps) => Total = steps;

    /// <summary>Reward models trained side by side in <c>member-K/</c> folders (the rm command's <c>ensemble</c>), else 1.</summary>
    private int Ensemble { get; }

    /// <summary>
    /// Whether the run in <paramref name="dir"/> is finished: its newest checkpoint is at <see cref="Total"/> (or beyond) and
    /// the final model was saved after it (<c>training_config.json</c>, written last, is not older than that checkpoint); for
    /// an ensemble, every member is, and <c>ensemble.json</c> is written. Returns the last step, or null.
    /// </summary>
    public int? FinishedAt(string dir)
    {
        if (Total is not int total) return null;
        if (Ensemble > 1)
        {
            var members = Enumerable.Range(0, Ensemble).Select(k => FinishedMember(Path.Combine(dir, $"member-{k}"), total)).ToList();
            return members.All(m => m is not null) && File.Exists(Path.Combine(dir, Rewards.EnsembleFile.FileName)) ? members.Min() : null;
        }
        return FinishedMember(dir, total);
    }

    private static int? FinishedMember(string dir, int total)
    {
        if (Checkpoints.NewestStep(dir) is not int step || step < total) return null;
        var saved = new FileInfo(Path.Combine(dir, RunDirectory.TrainingFile));
        var checkpoint = new DirectoryInfo(Path.Combine(Checkpoints.Root(dir), $"step-{step:D6}"));
        return saved.Exists && checkpoint.Exists && saved.LastWriteTimeUtc >= checkpoint.LastWriteTimeUtc ? step : null;
    }

    /// <summary>Adds an input: a model directory or reward spec as given, a data file as its full path and hash.</summary>
    public RunJob With(string name, string? value)
    {
        if (value is null) return this;
        bool file = File.Exists(value);
        _fields[name] = file || Directory.Exists(value) ? Path.GetFullPath(value) : value;
        if (file) _fields[name + "_sha256"] = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(value)));
        return this;
    }

    public const string ThreadsKey = "threads";

    /// <summary>The run's fixed CPU thread count (<see cref="CpuThreads.ForRun"/>; null: adaptive), recorded for --resume; not part of what a resume compares.</summary>
    public int? Threads
    {
        set
        {
            if (value is int n) _fields[ThreadsKey] = n;
            else _fields.Remove(ThreadsKey);
        }
    }

    /// <summary>The thread count recorded in <paramref name="dir"/>'s job.json, or null (none, or a run from before it was recorded).</summary>
    public static int? RecordedThreads(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path))?[ThreadsKey] is JsonValue v && v.TryGetValue(out int n) && n >= 1 ? n : null; }
        catch (System.Text.Json.JsonException) { return null; }                                // CheckSameJob reports it
    }

    public void Write(string dir) => AtomicFile.WriteText(Path.Combine(dir, FileName), _fields.ToJsonString(Json.Options));

    /// <summary>Refuses a resume whose job differs from the recorded one or whose run is finished (<see cref="FinishedAt"/>).</summary>
    public void CheckResume(string dir)
    {
        CheckSameJob(dir);
        if (FinishedAt(dir) is int done) throw new RunFinishedException(FinishedMessage(dir, done));
    }

    /// <summary>Refuses a resume whose job differs from the recorded one, naming the first difference; a run without job.json passes.</summary>
    public void CheckSameJob(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return;
        var recorded = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PpoSharpException($"{path}: not a JSON object");
        if (Difference(recorded, _fields, "") is string what)
            throw new PpoSharpException($"{dir}: --resume continues the same job only, and {what} (use --force to start over, or another --out)");
    }

    /// <summary>What a --resume of a finished run says (it changes nothing).</summary>
    public string FinishedMessage(string dir, int done) =>
        $"{_fields["command"]}: {dir} is finished ({done} of {Total} {Unit}); nothing to resume, nothing changed " +
        $"(to train on, --resume with a larger --set {Unit}=N; to start over, --force)";

    /// <summary>The config key of the run's length: iterations for the online trainers, steps for the others.</summary>
    private string Unit => _fields["command"]!.GetValue<string>() is "ppo" or "grpo" ? "iterations" : "steps";

    /// <summary>The first key whose value differs, as "KEY was A, now B".</summary>
    private static string? Difference(JsonObject was, JsonObject now, string prefix)
    {
        foreach (var key in was.Select(p => p.Key).Union(now.Select(p => p.Key)).Where(k => prefix.Length > 0 || k != ThreadsKey))
        {
            var (a, b) = (was[key], now[key]);
            if (a is JsonObject oa && b is JsonObject ob)
            {
                if (Difference(oa, ob, $"{prefix}{key}.") is string inner) return inner;
                continue;
            }
            if (!JsonNode.DeepEquals(a, b)) return $"{prefix}{key} was {a?.ToJsonString() ?? "absent"}, now {b?.ToJsonString() ?? "absent"}";
        }
        return null;
    }
}

/// <summary>A --resume of a finished run (known once the data is read, for a run of num_train_epochs): nothing was changed, and the CLI exits 0 with the message.</summary>
public sealed class RunFinishedException(string message) : PpoSharpException(message);
