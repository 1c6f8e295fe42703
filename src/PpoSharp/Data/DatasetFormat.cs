using System.Text.Json.Nodes;

namespace PpoSharp.Data;

/// <summary>
/// The dataset formats of TRL's "Dataset formats" guide, told apart by their fields. Each comes in a standard (text) and
/// a conversational (lists of <c>{"role", "content"}</c> messages) form; PpoSharp's own shapes are among them:
/// <c>messages</c> ending with the assistant is language modelling, <c>messages</c> + <c>solution</c> prompt-only,
/// <c>messages</c> + <c>chosen</c>/<c>rejected</c> preference with an explicit prompt.
/// </summary>
public enum DatasetFormat
{
    /// <summary><c>{"text"}</c> or <c>{"messages"}</c>: the whole text (the assistant turns) is learnt.</summary>
    LanguageModeling,
    /// <summary><c>{"prompt"}</c>: prompts for generation (ppo, grpo, eval).</summary>
    PromptOnly,
    /// <summary><c>{"prompt", "completion"}</c>: supervised pairs; the loss is on the completion only.</summary>
    PromptCompletion,
    /// <summary><c>{"prompt", "chosen", "rejected"}</c>: a preference with an explicit prompt.</summary>
    Preference,
    /// <summary><c>{"chosen", "rejected"}</c>: a preference with an implicit prompt (two full texts that start with the same prompt).</summary>
    ImplicitPreference,
    /// <summary><c>{"prompt", "completion", "label"}</c>: TRL's unpaired preference (KTO); no command here takes it.</summary>
    UnpairedPreference,
    /// <summary><c>{"prompt", "completions", "labels"}</c>: TRL's stepwise supervision (PRM); no command here takes it.</summary>
    StepwiseSupervision,
}

/// <summary>A file's format and whether its records are conversational (messages) or standard (text).</summary>
public readonly record struct DetectedFormat(DatasetFormat Format, bool Conversational)
{
    /// <summary>"prompt-completion (conversational)", as the messages name it.</summary>
    public override string ToString() => $"{DatasetFormats.Name(Format)} ({(Conversational ? "conversational" : "standard")})";
}

/// <summary>Detecting a record's format, and which formats each command takes (as TRL's trainers do).</summary>
public static class DatasetFormats
{
    /// <summary>What sft takes: language modelling and prompt-completion (TRL's SFTTrainer).</summary>
    public static readonly DatasetFormat[] Sft = [DatasetFormat.LanguageModeling, DatasetFormat.PromptCompletion];
    /// <summary>What rm and dpo take: preference, explicit or implicit prompt (TRL's RewardTrainer and DPOTrainer).</summary>
    public static readonly DatasetFormat[] Pairs = [DatasetFormat.Preference, DatasetFormat.ImplicitPreference];
    /// <summary>What ppo, grpo and eval take: prompt-only (TRL's GRPOTrainer and PPOTrainer).</summary>
    public static readonly DatasetFormat[] Prompts = [DatasetFormat.PromptOnly];

    public static string Name(DatasetFormat f) => f switch
    {
        DatasetFormat.LanguageModeling => "language modelling",
        DatasetFormat.PromptOnly => "prompt-only",
        DatasetFormat.PromptCompletion => "prompt-completion",
        DatasetFormat.Preference => "preference",
        DatasetFormat.ImplicitPreference => "preference with an implicit prompt",
        DatasetFormat.UnpairedPreference => "unpaired preference",
        DatasetFormat.StepwiseSupervision => "stepwise supervision",
        _ => f.ToString(),
    };

    /// <summary>The fields of a format as TRL writes them.</summary>
    public static string Fields(DatasetFormat f) => f switch
    {
        DatasetFormat.LanguageModeling => "{\"text\"} or {\"messages\"}",
        DatasetFormat.PromptOnly => "{\"prompt\"} or {\"messages\", \"solution\"}",
        DatasetFormat.PromptCompletion => "{\"prompt\", \"completion\"}",
        DatasetFormat.Preference => "{\"prompt\", \"chosen\", \"rejected\"}",
        DatasetFormat.ImplicitPreference => "{\"chosen\", \"rejected\"}",
        DatasetFormat.UnpairedPreference => "{\"prompt\", \"completion\", \"label\"}",
        _ => "{\"prompt\", \"completions\", \"labels\"}",
    };

    /// <summary>
    /// The format of a record (its columns already mapped to TRL's names), or null when it is none of them. By field:
    /// <c>chosen</c>/<c>rejected</c> make a preference (explicit when a <c>prompt</c> or <c>messages</c> is there);
    /// <c>completions</c> + <c>labels</c> stepwise supervision; <c>completion</c> prompt-completion (with <c>label</c>,
    /// unpaired preference); <c>prompt</c> prompt-only; <c>messages</c> language modelling when the last message is the
    /// assistant's, else prompt-only; <c>text</c> language modelling. Conversational when those fields hold lists.
    /// </summary>
    public static DetectedFormat? Detect(JsonObject r)
    {
        bool Has(string k) => r.ContainsKey(k);
        bool IsList(string k) => r[k] is JsonArray;
        if (Has("chosen") || Has("rejected"))
            return Has("prompt") || Has("messages") ? new(DatasetFormat.Preference, Has("messages") || IsList("prompt"))
                : new(DatasetFormat.ImplicitPreference, IsList(Has("chosen") ? "chosen" : "rejected"));
        if (Has("completions") && Has("labels")) return new(DatasetFormat.StepwiseSupervision, IsList("prompt"));
        if (Has("completion"))
            return new(Has("label") ? DatasetFormat.UnpairedPreference : DatasetFormat.PromptCompletion, IsList("completion"));
        if (Has("prompt")) return new(DatasetFormat.PromptOnly, IsList("prompt"));
        if (Has("messages"))
            return new(r["messages"] is JsonArray { Count: > 0 } m && m[^1] is JsonObject last && last["role"]?.GetValueKind() == System.Text.Json.JsonValueKind.String
                && last["role"]!.GetValue<string>() != "assistant" ? DatasetFormat.PromptOnly : DatasetFormat.LanguageModeling, true);
        if (Has("text")) return new(DatasetFormat.LanguageModeling, false);
        return null;
    }

    /// <summary>
    /// Checks that <paramref name="found"/> (from a file's first record) is one of <paramref name="accepted"/>: else one
    /// line naming the file, the format found and its fields, and the formats the command takes.
    /// </summary>
    public static DetectedFormat Require(DetectedFormat? found, JsonObject record, string file, string command, IReadOnlyList<DatasetFormat> accepted)
    {
        var needs = string.Join(" or ", accepted.Select(f => $"{Name(f)} {Fields(f)}"));
        var fields = string.Join(", ", record.Select(p => p.Key));
        if (found is not DetectedFormat f)
            throw new PpoSharpException($"{file}: no dataset format found (fields: {fields}); {command} takes {needs} (other column names: --set prompt_column=NAME)");
        if (!accepted.Contains(f.Format))
            throw new PpoSharpException($"{file}: {f} records (fields: {fields}); {command} takes {needs}");
        return f;
    }
}
