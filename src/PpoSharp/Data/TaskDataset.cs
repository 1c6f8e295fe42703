using System.Text.Json.Serialization;
using Parquet.Serialization;

namespace PpoSharp.Data;

/// <summary>
/// Writes a built-in task as a Hugging Face dataset folder of Parquet files, in GSM8K's shape: <c>data/train-00000-of-00001.parquet</c>
/// and <c>data/test-00000-of-00001.parquet</c> with string columns <c>question</c> and <c>answer</c> (the correct worked
/// answer: the label the <c>math</c> reward reads), and the SFT demonstrations as a second config,
/// <c>sft/train-00000-of-00001.parquet</c>, a <c>messages</c> column of <c>{role, content}</c> structs (the training
/// questions in the same order, a share <c>noise</c> of the answers with the task's systematic flaw).
/// </summary>
public static class TaskDataset
{
    public const string PromptColumn = "question", SolutionColumn = "answer";
    public static readonly string TrainFile = Path.Combine("data", "train-00000-of-00001.parquet");
    public static readonly string TestFile = Path.Combine("data", "test-00000-of-00001.parquet");
    public static readonly string SftFolder = "sft";
    public static readonly string SftFile = Path.Combine(SftFolder, "train-00000-of-00001.parquet");

    /// <summary>The options that read the folder's question/answer splits as prompts with a label.</summary>
    public static DataOptions Options(string split) => new() { PromptColumn = PromptColumn, SolutionColumn = SolutionColumn, Split = split };

    /// <summary>Writes the folder; returns the questions written, fewer than asked when the task has no more distinct ones.</summary>
    public static (int Train, int Eval) Write(BuiltinTask task, string directory, int trainCount, int evalCount, double noise, int seed)
    {
        var rng = new Random(seed);
        var (train, eval) = TaskData.Draw(task, rng, trainCount, evalCount);
        var demonstrations = train.Select(p => new SftRow
        {
            Messages = [new() { Role = "user", Content = p.Prompt }, new() { Role = "assistant", Content = rng.NextDouble() < noise ? task.Flawed(p.Prompt, p.Answer) : p.Answer }],
        }).ToList();
        Save(Path.Combine(directory, TrainFile), train.Select(QaRow.Of));
        Save(Path.Combine(directory, TestFile), eval.Select(QaRow.Of));
        Save(Path.Combine(directory, SftFile), demonstrations);
        return (train.Count, eval.Count);
    }

    private static void Save<T>(string path, IEnumerable<T> rows) where T : new()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var stream = File.Create(path);
        ParquetSerializer.SerializeAsync(rows.ToList(), stream).GetAwaiter().GetResult();
    }

    private sealed class QaRow
    {
        [JsonPropertyName("question")] public string Question { get; set; } = "";
        [JsonPropertyName("answer")] public string Answer { get; set; } = "";

        public static QaRow Of((string Prompt, string Answer) p) => new() { Question = p.Prompt, Answer = p.Answer };
    }

    private sealed class SftRow
    {
        [JsonPropertyName("messages")] public List<Message> Messages { get; set; } = [];
    }

    private sealed class Message
    {
        [JsonPropertyName("role")] public string Role { get; set; } = "";
        [JsonPropertyName("content")] public string Content { get; set; } = "";
    }
}
