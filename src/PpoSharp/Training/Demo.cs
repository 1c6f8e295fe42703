using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;
using Spectre.Console;
using TorchSharp;

namespace PpoSharp.Training;

/// <summary>What the demo runs on: a built-in task, a run directory, the SFT settings and data sizes.</summary>
public sealed record DemoOptions(BuiltinTask Task, string OutDir, SftConfig Sft, bool Force = false,
    int TrainRecords = 4000, int EvalPrompts = 200, double Noise = 0.0, int MaxNewTokens = 32);

/// <summary>
/// The main job, end to end on a built-in task: writes the task's data in the chat format, trains the policy with SFT,
/// and evaluates it greedily on held-out prompts (table and samples). The PPO and reward-model stages join it as
/// they are built.
/// </summary>
public static class Demo
{
    public static EvalResult Run(DemoOptions o, TextWriter log)
    {
        RunDirectory.PrepareOutput(o.OutDir, o.Force);
        var dataDir = Path.Combine(o.OutDir, "data");
        TaskData.Write(o.Task, dataDir, o.TrainRecords, o.EvalPrompts, o.Noise, o.Sft.Seed);
        log.WriteLine($"data: task '{o.Task.Name}' ({o.Task.Description}): {o.TrainRecords} chat records, {o.EvalPrompts} held-out prompts -> {dataDir}");

        var sftDir = Path.Combine(o.OutDir, "sft");
        Directory.CreateDirectory(sftDir);
        var records = Jsonl.ReadChat(Path.Combine(dataDir, TaskData.SftFile)).Records;
        var sft = RunSft(records, null, sftDir, o.Sft, log);
        log.WriteLine($"sft: {sft.Steps} steps in {sft.Seconds:F0} s, loss {sft.FinalLoss:F3}, eval loss {sft.EvalLoss:F3}, {sft.TokensPerSecond:F0} tokens/s -> {sftDir}");

        var prompts = Jsonl.ReadPrompts(Path.Combine(dataDir, TaskData.EvalFile)).Records;
        var (model, tokenizer) = RunDirectory.LoadPolicy(sftDir);
        var result = Evaluator.Evaluate(model, tokenizer, prompts, new EditDistance(), o.MaxNewTokens);
        PrintSummary(result, log);
        return result;
    }

    /// <summary>SFT from a new model (tokenizer built from the data) or from the run directory <paramref name="initDir"/>.</summary>
    public static SftResult RunSft(IReadOnlyList<ChatRecord> records, string? initDir, string outDir, SftConfig config, TextWriter log)
    {
        torch.manual_seed(config.Seed);
        Gpt model;
        ITokenizer tokenizer;
        if (initDir != null) (model, tokenizer) = RunDirectory.LoadPolicy(initDir);
        else
        {
            tokenizer = SftTrainer.NewTokenizer(config.Tokenizer, records);
            model = new Gpt(config.ModelConfig(tokenizer.VocabSize));
        }
        var examples = SftTrainer.Tokenize(records, tokenizer, model.Config.ContextLength);
        return new SftTrainer(config, log).Train(model, tokenizer, examples, outDir);
    }

    /// <summary>PPO from an SFT run; with held-out prompts, reports greedy reward and exact match before and after.</summary>
    public static (PpoResult Result, EvalResult? Before, EvalResult? After) RunPpo(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts,
        IReadOnlyList<PromptRecord>? evalPrompts, string outDir, PpoConfig config, TextWriter log)
    {
        using var trainer = PpoTrainer.FromRunDirectory(initDir, reward, prompts, config, log);
        EvalResult? Eval() => evalPrompts is null ? null : Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, evalPrompts, reward, config.ResponseLength);
        var before = Eval();
        var result = trainer.Train(outDir);
        var after = Eval();
        log.WriteLine($"ppo: {result.Iterations} iterations in {result.Seconds:F0} s; sampled reward {result.FirstRewardMean:F3} (first 10%) -> {result.LastRewardMean:F3} (last 10%), kl {result.LastKl:F3} -> {outDir}");
        if (before != null && after != null)
            log.WriteLine($"ppo: held-out greedy reward {before.RewardMean:F3} -> {after.RewardMean:F3}, exact match {before.ExactMatch:P1} -> {after.ExactMatch:P1} (n = {after.N})");
        return (result, before, after);
    }

    private static void PrintSummary(EvalResult r, TextWriter log)
    {
        var console = ReferenceEquals(log, Console.Out) ? AnsiConsole.Console
            : AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(log), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
        var table = new Table().Title($"held-out prompts (n = {r.N}, greedy)").AddColumn("metric").AddColumn(new TableColumn("SFT").RightAligned());
        table.AddRow("exact match", $"{r.ExactMatch:P1}");
        table.AddRow("edit-distance reward", $"{r.RewardMean:F3}");
        table.AddRow("response length (tokens)", $"{r.ResponseLength:F1}");
        console.Write(table);
        var samples = new Table().Title("samples").AddColumn("prompt").AddColumn("solution").AddColumn("SFT answer").AddColumn("ok");
        foreach (var s in r.Samples.Take(6))
            samples.AddRow(Markup.Escape(s.Prompt), Markup.Escape(string.Join(" | ", s.Solutions)), Markup.Escape(s.Response), s.ExactMatch ? "yes" : "no");
        console.Write(samples);
    }
}
