using System.Text.Json;

namespace PpoSharp.Training;

/// <summary>Appends one flat JSON object per step or iteration to <c>metrics.jsonl</c>, flushed at once.</summary>
public sealed class MetricsWriter(string path) : IDisposable
{
    public const string FileName = "metrics.jsonl";
    private readonly StreamWriter _writer = new(path, append: true) { AutoFlush = true };

    public void Write(IReadOnlyDictionary<string, object> row) => _writer.WriteLine(JsonSerializer.Serialize(row, Json.Compact));

    public void Dispose() => _writer.Dispose();

    /// <summary>Reads every row of a metrics file (for reports and tests).</summary>
    public static List<Dictionary<string, JsonElement>> Read(string path) =>
        File.ReadLines(path).Where(l => l.Length > 0)
            .Select(l => JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(l)!).ToList();
}
