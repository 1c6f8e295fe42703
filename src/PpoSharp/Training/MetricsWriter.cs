using System.Text.Json;
using static TorchSharp.torch.utils.tensorboard;

namespace PpoSharp.Training;

/// <summary>
/// Appends one flat JSON object per step or iteration to <c>metrics.jsonl</c>, flushed at once, and writes its numbers as
/// TensorBoard scalars (an <c>events.out.tfevents.*</c> file beside it), so that <c>tensorboard --logdir runs</c> shows
/// every run.
/// </summary>
public sealed class MetricsWriter : IDisposable
{
    public const string FileName = "metrics.jsonl";
    /// <summary>The names of the TensorBoard event files that a run folder gets (one per process that wrote metrics).</summary>
    public const string EventsPattern = "events.out.tfevents*";
    private readonly StreamWriter _writer;
    private readonly TorchSharp.Modules.SummaryWriter _events;

    public MetricsWriter(string path)
    {
        _writer = new StreamWriter(path, append: true) { AutoFlush = true };
        _events = SummaryWriter(Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    public void Write(IReadOnlyDictionary<string, object> row)
    {
        _writer.WriteLine(JsonSerializer.Serialize(row, Json.Compact));
        int step = Convert.ToInt32(row.TryGetValue("step", out var s) ? s : row.TryGetValue("iteration", out var i) ? i : 0);
        foreach (var (key, value) in row)
            if (key is not ("step" or "iteration") && value is double or float or int or long && Convert.ToDouble(value) is var v && double.IsFinite(v))
                _events.add_scalar(key, (float)v, step);
    }

    public void Dispose() => _writer.Dispose();

    /// <summary>Reads every row of a metrics file (for reports and tests).</summary>
    public static List<Dictionary<string, JsonElement>> Read(string path) =>
        File.ReadLines(path).Where(l => l.Length > 0)
            .Select(l => JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(l)!).ToList();
}
