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
        foreach (var key in Resumable) settings.Remove(key);
        _fields["config"] = settings;
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

    public void Write(string dir) => AtomicFile.WriteText(Path.Combine(dir, FileName), _fields.ToJsonString(Json.Options));

    /// <summary>Refuses a resume whose job differs from the recorded one, naming the first difference; a run without job.json passes.</summary>
    public void CheckResume(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return;
        var recorded = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PpoSharpException($"{path}: not a JSON object");
        if (Difference(recorded, _fields, "") is string what)
            throw new PpoSharpException($"{dir}: --resume continues the same job only, and {what} (use --force to start over, or another --out)");
    }

    /// <summary>The first key whose value differs, as "KEY was A, now B".</summary>
    private static string? Difference(JsonObject was, JsonObject now, string prefix)
    {
        foreach (var key in was.Select(p => p.Key).Union(now.Select(p => p.Key)))
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
