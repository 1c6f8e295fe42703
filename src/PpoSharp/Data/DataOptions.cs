using System.Text.Json.Nodes;

namespace PpoSharp.Data;

/// <summary>
/// How a data file is read: the split of a dataset folder, the columns that stand for TRL's field names, and a system
/// prompt put before every prompt. JSON keys in snake_case (<c>--set prompt_column=question</c>), as TRL and the
/// training configs name them; the defaults read TRL's own names.
/// </summary>
public sealed record DataOptions
{
    /// <summary>The column that holds the prompt (default <c>prompt</c>; GSM8K: <c>question</c>).</summary>
    public string PromptColumn { get; init; } = "prompt";

    /// <summary>The column that holds the label the rule rewards score against (default <c>solution</c>; GSM8K: <c>answer</c>).</summary>
    public string SolutionColumn { get; init; } = "solution";

    /// <summary>TRL's <c>dataset_text_field</c>: the column of a language-modelling record's text (default <c>text</c>).</summary>
    public string DatasetTextField { get; init; } = "text";

    /// <summary>A system message put before every prompt that has none (R1-style recipes); null or "" for none.</summary>
    public string? SystemPrompt { get; init; }

    /// <summary>The split of a dataset folder (train, test or validation); null reads a folder's train split and refuses a file.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? Split { get; init; }

    /// <summary>The command the data is for, named in the message when a file's format is not one it takes.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string Command { get; init; } = "this command";

    /// <summary>Checks the keys; the message names the bad one.</summary>
    public DataOptions Validate()
    {
        foreach (var (key, value) in new[] { ("prompt_column", PromptColumn), ("solution_column", SolutionColumn), ("dataset_text_field", DatasetTextField) })
            if (string.IsNullOrWhiteSpace(value)) throw new PpoSharpException($"{key} must name a column");
        if (Split is not null && !DataRows.Splits.Contains(Split))
            throw new PpoSharpException($"--split: '{Split}' is not a split (allowed: {string.Join(", ", DataRows.Splits)})");
        return this;
    }

    /// <summary>
    /// The record with its mapped columns under TRL's names: <see cref="PromptColumn"/> becomes <c>prompt</c> and
    /// <see cref="DatasetTextField"/> <c>text</c> (renamed), <see cref="SolutionColumn"/> is copied to <c>solution</c>
    /// (its own name stays, for rewards that read it by name). A mapped column the record lacks is an error listing its columns.
    /// </summary>
    public JsonObject Map(JsonObject record)
    {
        var maps = new[] { (PromptColumn, "prompt", "prompt_column", true), (DatasetTextField, "text", "dataset_text_field", true), (SolutionColumn, "solution", "solution_column", false) }
            .Where(m => m.Item1 != m.Item2).ToList();
        foreach (var (from, _, key, _) in maps)
            if (!record.ContainsKey(from))
                throw new FormatException($"{key} '{from}' is not a column of this record (its columns: {string.Join(", ", record.Select(p => p.Key))})");
        foreach (var (from, to, _, move) in maps)
        {
            var value = record[from];
            if (move) record.Remove(from);
            else value = value?.DeepClone();
            record[to] = value;
        }
        return record;
    }
}
