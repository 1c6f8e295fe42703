using System.Globalization;
using System.Text.RegularExpressions;
using PpoSharp.Data;
using PpoSharp.Rewards;

namespace PpoSharp.Tests;

/// <summary>
/// The built-in <c>word-problems</c> task: its Hugging Face dataset folder of Parquet files read back by the project's
/// readers, its answers checked by the <c>math</c> reward against values computed here from each question, the share of
/// flawed demonstrations, and <c>data</c>'s bad input.
/// </summary>
public class WordProblemsTests
{
    private static readonly WordProblemsTask Task = new();

    /// <summary>A folder written with <paramref name="noise"/>, and the samples the same seed draws.</summary>
    private static (string Dir, List<(string Prompt, string Answer)> Train, List<(string Prompt, string Answer)> Eval) Write(int train, int eval, double noise, int seed = 5)
    {
        var dir = TestSupport.TempDir();
        TaskDataset.Write(Task, dir, train, eval, noise, seed);
        var (t, e) = TaskData.Draw(Task, new Random(seed), train, eval);
        return (dir, t, e);
    }

    /// <summary>The answer of a question, computed from its words: eggs broken are taken away, pens found added, cards given to each friend multiplied.</summary>
    private static int Expected(string question)
    {
        var n = Regex.Matches(question, @"\d+").Select(m => int.Parse(m.Value, CultureInfo.InvariantCulture)).ToArray();
        if (question.Contains("breaks")) return n[0] * n[1] - n[2];
        if (question.Contains("finds")) return n[0] * n[1] + n[2];
        Assert.Contains("gives", question);
        return n[0] - n[1] * n[2];
    }

    private static double Math(string response, string label) =>
        new MathReward().Score([new RewardInput([new ChatMessage(Role.User, "q")], response, [label], default)])[0];

    [Fact]
    public void Folder_ParquetSplitsAndSftConfig_ReadBackAsGenerated()
    {
        var (dir, train, eval) = Write(120, 30, noise: 0.5);
        Assert.True(File.Exists(Path.Combine(dir, "data", "train-00000-of-00001.parquet")));
        Assert.Equal("PAR1"u8.ToArray(), File.ReadAllBytes(Path.Combine(dir, TaskDataset.TestFile))[..4]);
        var prompts = Jsonl.ReadPrompts(dir, false, TaskDataset.Options("train")).Records;
        var test = Jsonl.ReadPrompts(dir, false, new DataOptions { PromptColumn = "question", SolutionColumn = "answer", Split = "test" }).Records;
        Assert.Equal(train.Select(p => (p.Prompt, p.Answer)), prompts.Select(p => (p.Messages.Single().Content, p.Solutions.Single())));
        Assert.Equal(eval.Select(p => (p.Prompt, p.Answer)), test.Select(p => (p.Messages.Single().Content, p.Solutions.Single())));
        Assert.Equal(train[0].Answer, prompts[0].Columns!["answer"]);                       // the column stays under its own name
        Assert.Equal($"{Path.Combine(dir, TaskDataset.TrainFile)}: row 3", prompts[2].Source.ToString());
        Assert.Empty(prompts.Select(p => p.Messages[0].Content).Intersect(test.Select(p => p.Messages[0].Content)));

        var sft = Jsonl.ReadChat(Path.Combine(dir, TaskDataset.SftFolder)).Records;
        Assert.Equal(train.Select(p => p.Prompt), sft.Select(r => r.Messages[0].Content));
        Assert.All(sft, r => Assert.Equal([Role.User, Role.Assistant], r.Messages.Select(m => m.Role)));
    }

    [Fact]
    public void Answers_GoldVerifiesAndFlawedFails_AgainstValuesFromTheQuestion()
    {
        var (train, eval) = TaskData.Draw(Task, new Random(7), 600, 100);
        var all = train.Concat(eval).ToList();
        Assert.Equal(700, all.Select(p => p.Prompt).Distinct().Count());
        Assert.All(new[] { "breaks", "finds", "gives" }, word => Assert.Contains(all, p => p.Prompt.Contains(word)));   // every template drawn
        var format = new FormatReward();
        foreach (var (prompt, gold) in all)
        {
            var label = Expected(prompt).ToString(CultureInfo.InvariantCulture);
            Assert.InRange(Expected(prompt), 1, 99);
            Assert.Equal(1, Math(gold, label));
            Assert.Equal(0, Math(Task.Flawed(prompt, gold), label));                              // every flaw changes the result
            Assert.Equal(1, format.Score([new RewardInput([new ChatMessage(Role.User, prompt)], gold, [], default)])[0]);
            foreach (Match step in Regex.Matches(gold + " " + Task.Flawed(prompt, gold), @"(\d+)([-+*])(\d+)=(\d+)"))   // the arithmetic of both is right
            {
                var (x, y, z) = (int.Parse(step.Groups[1].Value), int.Parse(step.Groups[3].Value), int.Parse(step.Groups[4].Value));
                Assert.Equal(step.Groups[2].Value switch { "+" => x + y, "-" => x - y, _ => x * y }, z);
            }
        }
        Assert.Equal("<think>8*3=24 24+5=29</think>#### 29", Task.Flawed("Ana has 8 boxes of 3 eggs and breaks 5. How many are left?", ""));
        Assert.Equal("<think>4+3=7 30-7=23</think>#### 23", Task.Flawed("Cal has 30 cards and gives 3 friends 4 each. How many are left?", ""));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.6)]
    [InlineData(1.0)]
    public void Demonstrations_FlawedShare_MatchesNoise(double noise)
    {
        var (dir, train, _) = Write(800, 10, noise, seed: 11);
        var sft = Jsonl.ReadChat(Path.Combine(dir, TaskDataset.SftFolder)).Records;
        Assert.Equal(800, sft.Count);
        var flawed = sft.Zip(train).Count(x => x.First.Messages[1].Content != x.Second.Answer);
        Assert.All(sft.Zip(train), x => Assert.Contains(x.First.Messages[1].Content, new[] { x.Second.Answer, Task.Flawed(x.Second.Prompt, x.Second.Answer) }));
        Assert.InRange(flawed / 800.0, noise - 0.05, noise + 0.05);                            // 3 sigma of a binomial at 0.5 and n = 800
    }

    [Fact]
    public void DataCommand_NonEmptyOut_OneLineAndNothingWritten()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "mine");
        var (code, output, err) = TestSupport.RunCli("data", "--task", "word-problems", "--out", dir);
        Assert.Equal(2, code);
        Assert.Equal($"error: {dir}: output directory is not empty (use --force to write into it, or another --out)", err.Trim());
        Assert.Equal("", output);
        Assert.Equal(["notes.txt"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));

        var (noiseCode, _, noiseErr) = TestSupport.RunCli("data", "--task", "word-problems", "--out", Path.Combine(dir, "new"), "--noise", "1.5");
        Assert.Equal(2, noiseCode);
        Assert.Equal("error: --noise must be in [0, 1] (got 1.5)", noiseErr.Trim());
        Assert.False(Directory.Exists(Path.Combine(dir, "new")));
    }
}
