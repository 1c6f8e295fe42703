using System.Text.Json;

namespace PpoSharp.Data;

/// <summary>Records read from a JSON Lines file, and the invalid lines that were skipped (only with skip-invalid).</summary>
public sealed record JsonlResult<T>(IReadOnlyList<T> Records, IReadOnlyList<string> Skipped);

/// <summary>
/// Readers for the three record kinds of DESIGN.md. Every problem is a <see cref="PpoSharpException"/> whose message
/// is "file:line: problem"; with <c>skipInvalid</c> the bad lines are counted and returned instead, never dropped silently.
/// Blank lines are not records and are ignored.
/// </summary>
public static class Jsonl
{
    public static JsonlResult<ChatRecord> ReadChat(string path, bool skipInvalid = false) =>
        Read(path, skipInvalid, (e, src) =>
        {
            var messages = Messages(e);
            if (!messages.Any(m => m.Role == Role.Assistant))
                throw new FormatException("'messages' has no assistant message to learn from");
            return new ChatRecord(messages, src);
        });

    /// <summary>
    /// Prompts: <c>messages</c>, or TRL's prompt-only <c>prompt</c> (a string, or a list of messages), with an optional
    /// <c>solution</c> and any other columns.
    /// </summary>
    public static JsonlResult<PromptRecord> ReadPrompts(string path, bool skipInvalid = false) =>
        Read(path, skipInvalid, (e, src) =>
        {
            var messages = !e.TryGetProperty("messages", out _) && e.TryGetProperty("prompt", out var p)
                ? p.ValueKind == JsonValueKind.String ? [new ChatMessage(Role.User, p.GetString()!)] : Messages(e, "prompt")
                : Messages(e);
            if (messages[^1].Role == Role.Assistant)
                throw new FormatException("the last message of a prompt is from the assistant; there is nothing to answer");
            return new PromptRecord(messages, Solutions(e), src, Columns(e, "messages", "prompt", "solution"));
        });

    /// <summary>
    /// Completions to score: <c>completion</c> (a string) beside an optional prompt (<c>prompt</c> as text or messages,
    /// or <c>messages</c>), the labels in <paramref name="solutionColumn"/> and any other columns.
    /// </summary>
    public static JsonlResult<ScoredRecord> ReadScored(string path, bool skipInvalid = false, string solutionColumn = "solution") =>
        Read(path, skipInvalid, (e, src) =>
        {
            var completion = RequiredString(e, "completion");
            List<ChatMessage> messages = e.TryGetProperty("messages", out _) ? Messages(e)
                : e.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.String ? [new ChatMessage(Role.User, p.GetString()!)]
                : e.TryGetProperty("prompt", out var pm) && pm.ValueKind == JsonValueKind.Array ? Messages(e, "prompt")
                : [new ChatMessage(Role.User, "")];
            return new ScoredRecord(messages, completion, Solutions(e, solutionColumn), src, Columns(e, "completion"));
        });

    public static JsonlResult<PreferenceRecord> ReadPreferences(string path, bool skipInvalid = false) =>
        Read(path, skipInvalid, (e, src) =>
        {
            var messages = Messages(e);
            string chosen = RequiredString(e, "chosen"), rejected = RequiredString(e, "rejected");
            if (chosen == rejected) throw new FormatException("'chosen' and 'rejected' are identical");
            double margin = 0;
            if (e.TryGetProperty("margin", out var m))
            {
                if (m.ValueKind != JsonValueKind.Number || !double.IsFinite(m.GetDouble()))
                    throw new FormatException("'margin' must be a finite number");
                margin = m.GetDouble();
            }
            return new PreferenceRecord(messages, chosen, rejected, margin, src);
        });

    private static JsonlResult<T> Read<T>(string path, bool skipInvalid, Func<JsonElement, Source, T> parse)
    {
        var records = new List<T>();
        var skipped = new List<string>();
        foreach (var (src, line) in DataRows.Read(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new FormatException("a record must be a JSON object");
                records.Add(parse(doc.RootElement, src));
            }
            catch (Exception ex) when (ex is JsonException or FormatException)
            {
                var problem = ex is JsonException ? $"invalid JSON ({FirstSentence(ex.Message)})" : ex.Message;
                if (!skipInvalid) throw new PpoSharpException($"{src}: {problem}", ex);
                skipped.Add($"{src}: {problem}");
            }
        }
        if (records.Count == 0 && skipped.Count == 0) throw new PpoSharpException($"{path}: no records");
        if (records.Count == 0) throw new PpoSharpException($"{path}: every record is invalid (first: {skipped[0]})");
        return new JsonlResult<T>(records, skipped);
    }

    /// <summary>A record's fields other than <paramref name="taken"/>, by name: strings as they are, other values as JSON text.</summary>
    private static Dictionary<string, string> Columns(JsonElement e, params string[] taken) => e.EnumerateObject()
        .Where(p => !taken.Contains(p.Name))
        .GroupBy(p => p.Name).ToDictionary(g => g.Key, g => g.Last().Value.ValueKind == JsonValueKind.String ? g.Last().Value.GetString()! : g.Last().Value.GetRawText());

    private static List<ChatMessage> Messages(JsonElement e, string field = "messages")
    {
        if (!e.TryGetProperty(field, out var arr)) throw new FormatException($"missing field '{field}'");
        if (arr.ValueKind != JsonValueKind.Array) throw new FormatException($"'{field}' must be an array");
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var m in arr.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object) throw new FormatException($"'{field}[{i}]' must be an object");
            var roleText = RequiredString(m, "role", $"{field}[{i}].role");
            var role = roleText switch
            {
                "system" => Role.System,
                "user" => Role.User,
                "assistant" => Role.Assistant,
                _ => throw new FormatException($"'{field}[{i}].role' is '{roleText}'; allowed: system, user, assistant"),
            };
            var content = RequiredString(m, "content", $"{field}[{i}].content");
            if (content.Length == 0) throw new FormatException($"'{field}[{i}].content' is empty");
            list.Add(new ChatMessage(role, content));
            i++;
        }
        if (list.Count == 0) throw new FormatException($"'{field}' is empty");
        return list;
    }

    private static List<string> Solutions(JsonElement e, string column = "solution")
    {
        if (!e.TryGetProperty(column, out var s) || s.ValueKind == JsonValueKind.Null) return [];
        if (s.ValueKind == JsonValueKind.String) return [s.GetString()!];
        if (s.ValueKind != JsonValueKind.Array) throw new FormatException($"'{column}' must be a string or an array of strings");
        var list = new List<string>();
        foreach (var x in s.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.String) throw new FormatException($"'{column}' must be a string or an array of strings");
            list.Add(x.GetString()!);
        }
        if (list.Count == 0) throw new FormatException($"'{column}' is an empty array");
        return list;
    }

    private static string RequiredString(JsonElement e, string name, string? label = null)
    {
        label ??= name;
        if (!e.TryGetProperty(name, out var v)) throw new FormatException($"missing field '{label}'");
        if (v.ValueKind != JsonValueKind.String) throw new FormatException($"'{label}' must be a string, not {v.ValueKind.ToString().ToLowerInvariant()}");
        return v.GetString()!;
    }

    private static string FirstSentence(string message)
    {
        int i = message.IndexOf(". ", StringComparison.Ordinal);
        return i > 0 ? message[..i] : message.TrimEnd('.');
    }

    /// <summary>Writes records as JSON Lines (one compact object a line).</summary>
    public static void Write<T>(string path, IEnumerable<T> records)
    {
        using var w = new StreamWriter(path);
        foreach (var r in records) w.WriteLine(JsonSerializer.Serialize(r, Json.Compact));
    }
}
