using System.Text.Json;
using System.Text.Json.Nodes;

namespace PpoSharp.Data;

/// <summary>Records read from a JSON Lines file, and the invalid lines that were skipped (only with skip-invalid).</summary>
public sealed record JsonlResult<T>(IReadOnlyList<T> Records, IReadOnlyList<string> Skipped);

/// <summary>
/// Readers for the record kinds of DESIGN.md, in TRL's dataset formats (<see cref="DatasetFormat"/>), from any file
/// <see cref="DataRows"/> reads. Each file's format is detected from its first record and must be one the reader
/// takes; every record is then read in that format. Every problem is a <see cref="PpoSharpException"/> whose message is
/// "file:line: problem"; with <c>skipInvalid</c> the bad records are counted and returned instead, never dropped
/// silently. Blank lines are not records and are ignored.
/// </summary>
public static class Jsonl
{
    /// <summary>
    /// SFT records: language modelling (<c>{"text"}</c>, <c>{"messages"}</c>) and prompt-completion (standard text or
    /// conversational messages; the loss on the completion only).
    /// </summary>
    public static JsonlResult<ChatRecord> ReadChat(string path, bool skipInvalid = false, DataOptions? options = null)
    {
        var o = options ?? new DataOptions();
        return Read(path, skipInvalid, o, DatasetFormats.Sft, (e, f, src) =>
        {
            if (f.Format == DatasetFormat.LanguageModeling && !f.Conversational)
                return new ChatRecord([new ChatMessage(Role.Assistant, Fields.NonEmptyString(e, "text"))], src, Raw: true);
            if (f.Format == DatasetFormat.LanguageModeling)
            {
                var messages = Fields.Messages(e);
                if (!messages.Any(m => m.Role == Role.Assistant))
                    throw new FormatException("'messages' has no assistant message to learn from");
                return new ChatRecord(messages, src);
            }
            if (!f.Conversational)
                return new ChatRecord([new ChatMessage(Role.User, Fields.RequiredString(e, "prompt")), new ChatMessage(Role.Assistant, Fields.NonEmptyString(e, "completion"))],
                    src, PromptMessages: 1, Raw: true);
            var prompt = Fields.Prompt(e, o);
            var completion = Fields.Messages(e, "completion");
            if (!completion.Any(m => m.Role == Role.Assistant)) throw new FormatException("'completion' has no assistant message to learn from");
            return new ChatRecord([.. prompt, .. completion], src, PromptMessages: prompt.Count);
        });
    }

    /// <summary>
    /// Prompts (prompt-only): <c>messages</c>, or TRL's <c>prompt</c> (a string, or a list of messages), with an optional
    /// <c>solution</c> (after <see cref="DataOptions.SolutionColumn"/>) and any other columns, which the rewards read by name.
    /// </summary>
    public static JsonlResult<PromptRecord> ReadPrompts(string path, bool skipInvalid = false, DataOptions? options = null)
    {
        var o = options ?? new DataOptions();
        return Read(path, skipInvalid, o, DatasetFormats.Prompts, (e, _, src) =>
        {
            var messages = Fields.Prompt(e, o);
            if (messages[^1].Role == Role.Assistant)
                throw new FormatException("the last message of a prompt is from the assistant; there is nothing to answer");
            return new PromptRecord(messages, Fields.Solutions(e), src, Fields.Columns(e, "messages", "prompt", "solution"));
        });
    }

    /// <summary>
    /// Completions to score: <c>completion</c> (a string) beside an optional prompt (<c>prompt</c> as text or messages,
    /// or <c>messages</c>), the labels in <paramref name="solutionColumn"/> and any other columns.
    /// </summary>
    public static JsonlResult<ScoredRecord> ReadScored(string path, bool skipInvalid = false, string solutionColumn = "solution", string? split = null) =>
        Read(path, skipInvalid, new DataOptions { SolutionColumn = solutionColumn, Split = split }, null, (e, _, src) =>
        {
            var completion = Fields.RequiredString(e, "completion");
            List<ChatMessage> messages = e.ContainsKey("messages") || e.ContainsKey("prompt") ? Fields.Prompt(e, new DataOptions()) : [new ChatMessage(Role.User, "")];
            return new ScoredRecord(messages, completion, Fields.Solutions(e), src, Fields.Columns(e, "completion"));
        });

    /// <summary>
    /// Preference pairs: an explicit prompt (<c>prompt</c> or <c>messages</c>, with <c>chosen</c> and <c>rejected</c>
    /// answers as text or as one assistant message) or an implicit one (two full texts or conversations that share the
    /// prompt, split as TRL's <c>extract_prompt</c> does), and an optional <c>margin</c>.
    /// </summary>
    public static JsonlResult<PreferenceRecord> ReadPreferences(string path, bool skipInvalid = false, DataOptions? options = null)
    {
        var o = options ?? new DataOptions();
        return Read(path, skipInvalid, o, DatasetFormats.Pairs, (e, f, src) =>
        {
            var (messages, chosen, rejected) = f.Format == DatasetFormat.ImplicitPreference ? ImplicitPrompt.Split(e, o)
                : (Fields.Prompt(e, o), Fields.Answer(e, "chosen"), Fields.Answer(e, "rejected"));
            if (chosen == rejected) throw new FormatException("'chosen' and 'rejected' are identical");
            double margin = 0;
            if (e["margin"] is JsonNode m)
            {
                if (m.GetValueKind() != JsonValueKind.Number || !double.IsFinite(m.GetValue<double>()))
                    throw new FormatException("'margin' must be a finite number");
                margin = m.GetValue<double>();
            }
            return new PreferenceRecord(messages, chosen, rejected, margin, src);
        });
    }

    /// <summary>
    /// Each record of <paramref name="path"/> as a JSON object with its columns mapped by <paramref name="o"/>; the first
    /// record of each file gives the file's format, which must be one of <paramref name="accepted"/> (null: any).
    /// </summary>
    private static JsonlResult<T> Read<T>(string path, bool skipInvalid, DataOptions o, IReadOnlyList<DatasetFormat>? accepted, Func<JsonObject, DetectedFormat, Source, T> parse)
    {
        var records = new List<T>();
        var skipped = new List<string>();
        string? file = null;
        DetectedFormat format = default;
        foreach (var (src, line) in DataRows.Read(path, o.Split))
        {
            try
            {
                var e = (JsonNode.Parse(line) as JsonObject ?? throw new FormatException("a record must be a JSON object"));
                _ = e.Count;                                                   // a duplicate field throws here
                o.Map(e);
                if (src.File != file)
                {
                    format = accepted is null ? default : DatasetFormats.Require(DatasetFormats.Detect(e), e, src.File, o.Command, accepted);
                    file = src.File;
                }
                records.Add(parse(e, format, src));
            }
            catch (Exception ex) when (ex is JsonException or FormatException or ArgumentException or InvalidOperationException)
            {
                var problem = ex switch
                {
                    JsonException => $"invalid JSON ({FirstSentence(ex.Message)})",
                    ArgumentException => $"a field is given twice ({FirstSentence(ex.Message)})",
                    InvalidOperationException => $"a field has the wrong type ({FirstSentence(ex.Message)})",
                    _ => ex.Message,
                };
                if (!skipInvalid) throw new PpoSharpException($"{src}: {problem}", ex);
                skipped.Add($"{src}: {problem}");
            }
        }
        if (records.Count == 0 && skipped.Count == 0) throw new PpoSharpException($"{path}: no records");
        if (records.Count == 0) throw new PpoSharpException($"{path}: every record is invalid (first: {skipped[0]})");
        return new JsonlResult<T>(records, skipped);
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
