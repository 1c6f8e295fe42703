namespace PpoSharp.Data;

public enum Role { System, User, Assistant }

public sealed record ChatMessage(Role Role, string Content);

/// <summary>Where a record came from, for error messages: "file:line", or "file.parquet: row N" for a table's rows.</summary>
public readonly record struct Source(string File, int Line, bool Row = false)
{
    public override string ToString() => Row ? $"{File}: row {Line}" : $"{File}:{Line}";

    /// <summary>Runs one step on this record (such as its chat template); a <see cref="PpoSharpException"/> is reported with the record's file:line.</summary>
    public T Apply<T>(Func<T> step)
    {
        try { return step(); }
        catch (PpoSharpException e) when (!e.Message.StartsWith(ToString(), StringComparison.Ordinal)) { throw new PpoSharpException($"{this}: {e.Message}"); }
    }
}

/// <summary>
/// An SFT record. Conversational (<c>{"messages"}</c>, or a prompt-completion of messages): rendered with the chat template,
/// the loss on assistant turns. <paramref name="Raw"/> (standard <c>{"text"}</c> or <c>{"prompt", "completion"}</c> text):
/// the text of the messages joined without a template, ended with EOS. The first <paramref name="PromptMessages"/> messages are
/// a prompt the loss leaves out (TRL's completion-only loss); 0 for language modelling.
/// </summary>
public sealed record ChatRecord(IReadOnlyList<ChatMessage> Messages, Source Source, int PromptMessages = 0, bool Raw = false);

/// <summary>
/// A prompt for PPO and eval: <c>{"messages":[...], "solution": "..." | ["...", ...]}</c>. <see cref="Solutions"/>
/// holds the positive answer or group of them (empty when the record has none); rule rewards score against the best.
/// </summary>
/// <see cref="Columns"/> holds the record's other fields by name (strings as they are, other values as JSON text), which
/// the rewards read as TRL's reward functions read extra dataset columns.
public sealed record PromptRecord(IReadOnlyList<ChatMessage> Messages, IReadOnlyList<string> Solutions, Source Source,
    IReadOnlyDictionary<string, string>? Columns = null);

/// <summary>
/// A completion to score without a model (the <c>score</c> command): <c>{"completion": "...", "prompt"?: ..., "solution"?: ...,
/// other columns}</c>.
/// </summary>
public sealed record ScoredRecord(IReadOnlyList<ChatMessage> Messages, string Completion, IReadOnlyList<string> Solutions, Source Source,
    IReadOnlyDictionary<string, string> Columns);

/// <summary>A preference pair: <c>{"messages":[...], "chosen":"...", "rejected":"...", "margin": 0.0?}</c>.</summary>
public sealed record PreferenceRecord(IReadOnlyList<ChatMessage> Messages, string Chosen, string Rejected, double Margin, Source Source);
