using System.Collections;
using System.Text;
using System.Text.Json;
using Parquet.Serialization;

namespace PpoSharp.Data;

/// <summary>
/// The records of a data file or folder, each as JSON text with its source: JSON Lines (<c>.jsonl</c>; "file:line"),
/// JSON (<c>.json</c>: an array of records as pandas/HF <c>to_json(orient="records")</c> writes it, else JSON Lines),
/// Parquet (<c>.parquet</c>, read with Parquet.Net; "file.parquet: row N"; nulls, lists and structs become JSON null,
/// arrays and objects), and a Hugging Face dataset folder as <c>huggingface-cli download --repo-type dataset</c> leaves it:
/// the <c>&lt;split&gt;-NNNNN-of-NNNNN.parquet</c> shards (or <c>&lt;split&gt;.jsonl</c>, <c>.json</c>, <c>.parquet</c>) under
/// <c>data/</c>, a config folder, or the folder itself.
/// </summary>
public static class DataRows
{
    /// <summary>The splits a dataset folder may hold.</summary>
    public static readonly string[] Splits = ["train", "test", "validation"];

    /// <summary>
    /// The rows of <paramref name="path"/>: a file, or a dataset folder read at <paramref name="split"/> (default train).
    /// A split given with a file is an error: it chooses among a folder's files.
    /// </summary>
    public static IEnumerable<(Source Source, string Json)> Read(string path, string? split = null)
    {
        if (Directory.Exists(path)) return Shards(path, split ?? "train").SelectMany(f => ReadFile(f));
        if (!File.Exists(path)) throw new PpoSharpException($"{path}: file not found");
        if (split is not null) throw new PpoSharpException($"{path}: --split {split} chooses the files of a dataset folder, and this is one file (leave out --split, or give the folder)");
        return ReadFile(path);
    }

    /// <summary>The files of <paramref name="split"/> in a dataset folder, in shard order; an error listing the splits found when it has none.</summary>
    public static IReadOnlyList<string> Shards(string dir, string split)
    {
        foreach (var folder in new[] { Path.Combine(dir, "data") }.Concat(Directory.GetDirectories(dir).Order(StringComparer.Ordinal)).Append(dir))
        {
            if (!Directory.Exists(folder)) continue;
            var files = Directory.GetFiles(folder).Where(f => IsData(f) && SplitOf(f) == split).Order(StringComparer.Ordinal).ToList();
            if (files.Count > 0) return files;
        }
        var found = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Where(IsData).Select(SplitOf).OfType<string>().Distinct().Order().ToList();
        throw new PpoSharpException(found.Count == 0
            ? $"{dir}: a directory without '{split}' split files (expected data/{split}-00000-of-00001.parquet or {split}.jsonl); --data takes a file or a dataset folder"
            : $"{dir}: no '{split}' split; found: {string.Join(", ", found)} (choose one with --split)");
    }

    private static bool IsData(string f) => Path.GetExtension(f) is ".parquet" or ".jsonl" or ".json";

    /// <summary>"train-00000-of-00003.parquet" and "train.jsonl" -> "train"; null for other names.</summary>
    private static string? SplitOf(string file)
    {
        var name = Path.GetFileNameWithoutExtension(file);
        int dash = name.IndexOf('-');
        var split = dash < 0 ? name : name[..dash];
        return Splits.Contains(split) ? split : null;
    }

    private static IEnumerable<(Source, string)> ReadFile(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".parquet" => Parquet(path),
        ".json" when FirstChar(path) == '[' => JsonArray(path),
        _ => Lines(path),
    };

    private static IEnumerable<(Source, string)> Lines(string path)
    {
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (!string.IsNullOrWhiteSpace(line)) yield return (new Source(path, lineNo), line);
        }
    }

    private static char FirstChar(string path)
    {
        using var r = new StreamReader(path);
        int c;
        while ((c = r.Read()) >= 0 && char.IsWhiteSpace((char)c)) { }
        return c < 0 ? '\0' : (char)c;
    }

    private static IEnumerable<(Source, string)> JsonArray(string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new PpoSharpException($"{path}: invalid JSON ({e.Message.Split(". ")[0]})"); }
        using (doc)
            return doc.RootElement.EnumerateArray().Select((e, i) => (new Source(path, i + 1, Row: true), e.GetRawText())).ToList();
    }

    private static IEnumerable<(Source, string)> Parquet(string path)
    {
        DeserializationResult<Dictionary<string, object>> table;
        try
        {
            using var stream = File.OpenRead(path);
            table = ParquetSerializer.DeserializeUntypedAsync(stream).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException or ArgumentException or InvalidOperationException or IndexOutOfRangeException or AggregateException)
        {
            throw new PpoSharpException($"{path}: not a readable Parquet file ({FirstLine(e)})");
        }
        var columns = table.Schema.Fields.Select(f => f.Name).ToList();
        return table.Data.Select((row, i) => (new Source(path, i + 1, Row: true), RowJson(row, columns))).ToList();
    }

    private static string FirstLine(Exception e)
    {
        while (e.InnerException is not null && e is AggregateException or System.Reflection.TargetInvocationException) e = e.InnerException;
        return e.Message.Split('\n')[0].TrimEnd('.');
    }

    /// <summary>A row as a JSON object: every column of the schema, null where the row has no value.</summary>
    private static string RowJson(Dictionary<string, object> row, IReadOnlyList<string> columns)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            foreach (var name in columns)
            {
                w.WritePropertyName(name);
                Write(w, row.GetValueOrDefault(name));
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void Write(Utf8JsonWriter w, object? value)
    {
        switch (value)
        {
            case null: w.WriteNullValue(); break;
            case string s: w.WriteStringValue(s); break;
            case ReadOnlyMemory<char> m: w.WriteStringValue(m.Span); break;
            case bool b: w.WriteBooleanValue(b); break;
            case byte[] bytes: w.WriteStringValue(Encoding.UTF8.GetString(bytes)); break;
            case DateTime d: w.WriteStringValue(d); break;
            case IDictionary<string, object> o:
                w.WriteStartObject();
                foreach (var (k, v) in o) { w.WritePropertyName(k); Write(w, v); }
                w.WriteEndObject();
                break;
            case IEnumerable list:
                w.WriteStartArray();
                foreach (var x in list) Write(w, x);
                w.WriteEndArray();
                break;
            case IConvertible n: w.WriteRawValue(n.ToString(System.Globalization.CultureInfo.InvariantCulture)); break;
            default: w.WriteStringValue(value.ToString()); break;
        }
    }
}
