using PpoSharp.Data;

namespace PpoSharp.Training;

/// <summary>
/// The dataset keys of every trainer's config: which columns stand for TRL's <c>prompt</c> and the reward's
/// <c>solution</c>, and a system prompt put before every prompt. <see cref="Data"/> is them as the readers take them.
/// </summary>
public abstract record DataKeys : ComputeKeys
{
    /// <summary>The column holding the prompt (default <c>prompt</c>; GSM8K: <c>question</c>).</summary>
    public string PromptColumn { get; init; } = "prompt";
    /// <summary>The column holding the label the rule rewards score against (default <c>solution</c>; GSM8K: <c>answer</c>).</summary>
    public string SolutionColumn { get; init; } = "solution";
    /// <summary>A system message put before every prompt that has none (R1-style recipes); null for none.</summary>
    public string? SystemPrompt { get; init; }

    /// <summary>The column of a language-modelling record's text: <c>text</c>, or SFT's <c>dataset_text_field</c>.</summary>
    protected virtual string TextField => "text";

    /// <summary>The keys as the data readers take them, checked.</summary>
    public DataOptions Data(string? split = null, string command = "this command") => new DataOptions
    {
        PromptColumn = PromptColumn, SolutionColumn = SolutionColumn, DatasetTextField = TextField, SystemPrompt = SystemPrompt, Split = split, Command = command,
    }.Validate();
}
