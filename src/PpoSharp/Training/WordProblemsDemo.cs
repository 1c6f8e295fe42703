using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Reporting;
using PpoSharp.Rewards;
using TableRow = PpoSharp.Reporting.TableRow;

namespace PpoSharp.Training;

/// <summary>
/// The demo of the built-in <c>word-problems</c> task, RL with a verifiable reward: writes the task as a Hugging Face
/// dataset folder of Parquet files (GSM8K's <c>question</c>/<c>answer</c> columns), trains a new model with SFT on its
/// demonstrations (a share of them with the wrong operation at one step), then GRPO with <see cref="RewardText"/> on the
/// training questions, and compares the two greedily on the held-out test split: accuracy (the share whose <c>math</c>
/// reward is 1) and each reward function's mean.
/// </summary>
public static class WordProblemsDemo
{
    public const string Task = "word-problems", RewardText = "math,format:0.2";

    /// <summary>
    /// The demo's defaults for this task: a context of 128 characters (prompt and worked answer are ~100), SFT 600 steps,
    /// GRPO 40 iterations of 16 questions x 8 completions of up to 40 characters; GRPO only.
    /// </summary>
    public static DemoConfig Defaults => new()
    {
        Task = Task,
        TrainRecords = 900,
        Methods = "grpo",
        Sft = new SftConfig { ContextLength = 128, Steps = 600 },
        Grpo = new GrpoConfig { Iterations = 40, MaxCompletionLength = 40, Lr = 1e-4 },
    };

    public static DemoResult Run(DemoConfig c, string outDir, bool force, TextWriter log)
    {
        RunDirectory.PrepareOutput(outDir, force);
        var task = BuiltinTask.Get(c.Task);
        var dataDir = Path.Combine(outDir, "data");
        var (n, m) = TaskDataset.Write(task, dataDir, c.TrainRecords, c.EvalPrompts, c.Noise, c.Seed);
        log.WriteLine($"data: task '{task.Name}' ({task.Description}); {n} demonstrations, {c.Noise:P0} of them with the wrong operation; " +
            $"{m} held-out questions -> {dataDir} (Parquet: {TaskDataset.TrainFile}, {TaskDataset.TestFile}, {TaskDataset.SftFile})");

        var sftDir = Path.Combine(outDir, "sft");
        var sft = Demo.RunSft(Jsonl.ReadChat(Path.Combine(dataDir, TaskDataset.SftFolder)).Records, null, sftDir, c.Sft, log);
        log.WriteLine(sft.Summary(sftDir));

        var reward = RewardSpec.Parse(RewardText, options: c.Grpo.RewardOptions());
        var prompts = Jsonl.ReadPrompts(dataDir, false, TaskDataset.Options("train")).Records;
        var heldOut = Jsonl.ReadPrompts(dataDir, false, TaskDataset.Options("test")).Records;
        var (sftModel, tokenizer) = RunDirectory.LoadPolicy(sftDir);
        int maxNew = c.Grpo.MaxCompletionLength;
        var before = Evaluator.Evaluate(sftModel, tokenizer, heldOut, reward, maxNew);

        var grpoDir = Path.Combine(outDir, "grpo");
        using var trainer = PpoTrainer.FromRunDirectory(sftDir, reward, prompts, c.Grpo, log);
        var training = trainer.Train(grpoDir);
        log.WriteLine(training.Summary(grpoDir));
        var after = Evaluator.Evaluate(trainer.Actor, tokenizer, heldOut, reward, maxNew);

        var parts = new[] { Parts(before, reward), Parts(after, reward) };                       // each function's scores, per model
        var models = new List<MethodResult> { new("SFT", ByMath(before, parts[0]), 0, sft.Seconds, 0), new("GRPO", ByMath(after, parts[1]), 0, training.Seconds, training.GeneratedTokens) };
        var table = Table(models, parts, reward);
        var samples = DemoResult.SideBySide(models.Select(m => m.Eval).ToList(), 12);
        Demo.PrintTables($"held-out questions (n = {heldOut.Count}, greedy)", [.. models.Select(m => m.Name)], table, samples.Take(8), log);
        log.WriteLine("ok: the math reward is 1 (the final answer after #### equals the label's)");
        Demo.WriteSummary(outDir, new DemoSummary(task.Name, heldOut.Count, reward.Name, [.. models.Select(m => m.Name)], table, samples));
        log.WriteLine($"report: {Report.Write(outDir)}");
        return new DemoResult(models, null);
    }

    /// <summary>The evaluation with each sample marked correct when its <c>math</c> reward is 1, and its label shown as the final answer only.</summary>
    private static EvalResult ByMath(EvalResult e, Dictionary<string, double[]> parts)
    {
        var math = parts["math"];
        var samples = e.Samples.Select((s, i) => s with { ExactMatch = math[i] == 1, Solutions = [.. s.Solutions.Select(l => MathAnswer.Extract(l) ?? l)] }).ToList();
        return e with { ExactMatch = math.Average(), Samples = samples };
    }

    /// <summary>Each reward function's scores of an evaluation's responses.</summary>
    private static Dictionary<string, double[]> Parts(EvalResult e, CompositeReward reward) =>
        reward.ScoreParts(e.Samples.Select(s => new RewardInput([new ChatMessage(Role.User, s.Prompt)], s.Response, s.Solutions, default)).ToList()).Parts;

    private static List<TableRow> Table(List<MethodResult> models, Dictionary<string, double[]>[] parts, CompositeReward reward)
    {
        List<TableRow> rows = [new("accuracy (math = 1)", [.. models.Select(m => $"{m.Eval.ExactMatch:P1}")])];
        foreach (var (f, w) in reward.Parts)
            rows.Add(new($"{f.Name} reward (weight {w:G})", [.. parts.Select(p => $"{p[f.Name].Average():F3}")]));
        rows.Add(new($"reward ({reward.Name})", [.. models.Select(m => $"{m.Eval.RewardMean:F3}")]));
        rows.Add(new("response length (tokens)", [.. models.Select(m => $"{m.Eval.ResponseLength:F1}")]));
        rows.Add(new("training time (s)", [.. models.Select(m => $"{m.Seconds:F0}")]));
        rows.Add(new("tokens generated in training", [.. models.Select(m => $"{m.GeneratedTokens:F0}")]));
        return rows;
    }
}
