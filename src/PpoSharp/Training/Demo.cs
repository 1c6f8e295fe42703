using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Reporting;
using PpoSharp.Rewards;
using PpoSharp.Text;
using Spectre.Console;
using TableRow = PpoSharp.Reporting.TableRow;
using TorchSharp;

namespace PpoSharp.Training;

/// <summary>
/// Settings of the demo: the built-in task and its data, then the SFT and PPO sections (addressed as
/// <c>--set sft.steps=600</c>, <c>--set ppo.iterations=30</c>). <see cref="Seed"/> seeds data, SFT and PPO.
/// </summary>
public sealed record DemoConfig
{
    public string Task { get; init; } = "sort";
    public int TrainRecords { get; init; } = 4000;
    public int EvalPrompts { get; init; } = 200;
    /// <summary>Share of SFT demonstrations with the task's systematic flaw: room that PPO with the rule reward can close.</summary>
    public double Noise { get; init; } = 0.6;
    public int Seed { get; init; } = 1;
    /// <summary>PPO's reward: the rule (edit distance to the solution) or the reward model trained in the demo (the rule is then logged as gold).</summary>
    public DemoReward Reward { get; init; } = DemoReward.Rule;
    public SftConfig Sft { get; init; } = new();
    public RmConfig Rm { get; init; } = new() { Steps = 300 };
    public PpoConfig Ppo { get; init; } = new();

    public DemoConfig Validate()
    {
        BuiltinTask.Get(Task);
        Check.Positive(TrainRecords, "train_records");
        Check.Positive(EvalPrompts, "eval_prompts");
        Check.InRange(Noise, 0, 1, "noise");
        Sft.Validate();
        Rm.Validate();
        Ppo.Validate();
        return this with { Sft = Sft with { Seed = Seed }, Rm = Rm with { Seed = Seed }, Ppo = Ppo with { Seed = Seed } };
    }
}

public enum DemoReward { Rule, Model }

/// <summary>The demo's held-out comparison of the SFT and PPO models, and the reward model's held-out ranking.</summary>
public sealed record DemoResult(EvalResult Sft, EvalResult Ppo, double SftKl, double PpoKl, PpoResult Training, PairEval RewardModel)
{
    public List<TableRow> Table() =>
    [
        new("edit-distance reward", $"{Sft.RewardMean:F3}", $"{Ppo.RewardMean:F3}"),
        new("exact match", $"{Sft.ExactMatch:P1}", $"{Ppo.ExactMatch:P1}"),
        new("KL to reference (nats/sequence)", $"{SftKl:F3}", $"{PpoKl:F3}"),
        new("response length (tokens)", $"{Sft.ResponseLength:F1}", $"{Ppo.ResponseLength:F1}"),
    ];

    public List<DemoSample> Samples(int count) => SideBySide(Sft, Ppo, count);

    /// <summary>The first <paramref name="count"/> prompts with the answers of the model before and after training.</summary>
    public static List<DemoSample> SideBySide(EvalResult before, EvalResult after, int count) => before.Samples.Zip(after.Samples).Take(count)
        .Select(p => new DemoSample(p.First.Prompt, string.Join(" | ", p.First.Solutions), p.First.Response, p.First.ExactMatch, p.Second.Response, p.Second.ExactMatch))
        .ToList();
}

/// <summary>
/// The main job, end to end on a built-in task: writes the task's data in the chat format (a share of the
/// demonstrations flawed), trains the policy with SFT, improves it with PPO and the rule reward on <c>solution</c>,
/// and compares both on held-out prompts (table and samples side by side).
/// </summary>
public static class Demo
{
    public static DemoResult Run(DemoConfig c, string outDir, bool force, TextWriter log)
    {
        RunDirectory.PrepareOutput(outDir, force);
        var task = BuiltinTask.Get(c.Task);
        var dataDir = Path.Combine(outDir, "data");
        TaskData.Write(task, dataDir, c.TrainRecords, c.EvalPrompts, c.Noise, c.Seed);
        log.WriteLine($"data: task '{task.Name}' ({task.Description}); {c.TrainRecords} demonstrations, {c.Noise:P0} of them flawed; {c.EvalPrompts} held-out prompts -> {dataDir}");

        var sftDir = Path.Combine(outDir, "sft");
        var records = Jsonl.ReadChat(Path.Combine(dataDir, TaskData.SftFile)).Records;
        var sft = RunSft(records, null, sftDir, c.Sft, log);
        log.WriteLine(sft.Summary(sftDir));

        var rmDir = Path.Combine(outDir, "rm");
        var pairs = Jsonl.ReadPreferences(Path.Combine(dataDir, TaskData.PreferencesFile)).Records;
        var rm = RunRm(pairs, sftDir, rmDir, c.Rm, log);

        var rule = new EditDistance();
        IRewardFunction reward = c.Reward == DemoReward.Model ? RewardModelScorer.Load(rmDir) : rule;
        var prompts = Jsonl.ReadPrompts(Path.Combine(dataDir, TaskData.PromptsFile)).Records;
        var heldOut = Jsonl.ReadPrompts(Path.Combine(dataDir, TaskData.EvalFile)).Records;
        var ppoDir = Path.Combine(outDir, "ppo");
        using var trainer = PpoTrainer.FromRunDirectory(sftDir, reward, prompts, c.Ppo, log, gold: c.Reward == DemoReward.Model ? rule : null);
        var (sftModel, tokenizer) = RunDirectory.LoadPolicy(sftDir);
        var training = trainer.Train(ppoDir);
        log.WriteLine(training.Summary(ppoDir));

        using var generator = new torch.Generator((ulong)c.Seed);
        int maxNew = c.Ppo.ResponseLength;
        var result = new DemoResult(
            Evaluator.Evaluate(sftModel, tokenizer, heldOut, rule, maxNew),
            Evaluator.Evaluate(trainer.Actor, tokenizer, heldOut, rule, maxNew),
            0.0,                                                  // the SFT model is the reference: KL 0 by definition
            Evaluator.KlToReference(trainer.Actor, sftModel, tokenizer, heldOut, maxNew, generator),
            training, rm);
        PrintSummary(result, log);
        var summary = new DemoSummary(task.Name, heldOut.Count, reward.Name, result.Table(), result.Samples(12));
        File.WriteAllText(Path.Combine(outDir, Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));
        log.WriteLine($"report: {Report.Write(outDir)}");
        return result;
    }

    /// <summary>SFT from a new model (tokenizer built from the data) or from the run directory <paramref name="initDir"/>.</summary>
    public static SftResult RunSft(IReadOnlyList<ChatRecord> records, string? initDir, string outDir, SftConfig config, TextWriter log,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false)
    {
        torch.manual_seed(config.Seed);
        Decoder model;
        ITokenizer tokenizer;
        if (initDir != null) (model, tokenizer) = RunDirectory.LoadPolicy(initDir, RunDirectory.ChatKwargs(config.ChatTemplateKwargs));
        else
        {
            tokenizer = SftTrainer.NewTokenizer(config.Tokenizer, records);
            model = new Decoder(config.ModelConfig(tokenizer.VocabSize));
        }
        var invalid = new InvalidRecords(skipInvalid);
        var examples = SftTrainer.Tokenize(records, tokenizer, model.Config.ContextLength, invalid);
        ReportInputs(invalid, tokenizer, log);
        model.to(config.Device.Resolve());
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        return new SftTrainer(config, log).Train(model, tokenizer, examples, outDir, resume, stop);
    }

    /// <summary>What the trainers' inputs lost once tokenized: skipped records, and characters the model's tokenizer does not know.</summary>
    private static void ReportInputs(InvalidRecords invalid, ITokenizer tokenizer, TextWriter log)
    {
        InvalidRecords.Report(invalid.Skipped, log);
        (tokenizer as CharTokenizer)?.WarnUnknown(log);
    }

    /// <summary>A reward model whose backbone starts from the SFT run <paramref name="initDir"/>.</summary>
    public static PairEval RunRm(IReadOnlyList<PreferenceRecord> records, string initDir, string outDir, RmConfig config, TextWriter log,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false)
    {
        torch.manual_seed(config.Seed);
        var (backbone, tokenizer) = RunDirectory.LoadPolicy(initDir, RunDirectory.ChatKwargs(config.ChatTemplateKwargs));
        var model = new RewardModel(backbone, mlpHead: Tokenizers.IsBuiltIn(tokenizer));
        var invalid = new InvalidRecords(skipInvalid);
        var pairs = RewardTrainer.Tokenize(records, tokenizer, backbone.Config.ContextLength, invalid);
        ReportInputs(invalid, tokenizer, log);
        model.to(config.Device.Resolve());
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        return new RewardTrainer(config, log).Train(model, tokenizer, pairs, outDir, resume, stop);
    }

    /// <summary>
    /// DPO from the policy in <paramref name="initDir"/> (a PpoSharp run or a Hugging Face folder); the frozen reference is
    /// a second copy of it, loaded only to compute the reference log-probs once (not on a resume that finds them stored).
    /// </summary>
    public static DpoResult RunDpo(IReadOnlyList<PreferenceRecord> records, string initDir, string outDir, DpoConfig config, TextWriter log,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false)
    {
        torch.manual_seed(config.Seed);
        var (policy, tokenizer) = RunDirectory.LoadPolicy(initDir, RunDirectory.ChatKwargs(config.ChatTemplateKwargs));
        var invalid = new InvalidRecords(skipInvalid);
        var pairs = DpoTrainer.Tokenize(records, tokenizer, policy.Config.ContextLength, invalid);
        ReportInputs(invalid, tokenizer, log);
        var device = config.Device.Resolve();
        policy.to(device);
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        var trainer = new DpoTrainer(config, log);
        Decoder? reference = null;
        try { pairs = trainer.AttachReference(pairs, () => reference = RunDirectory.LoadPolicyModel(initDir).to(device), tokenizer.Special.Pad, outDir, resume); }
        finally { reference?.Dispose(); }
        var result = trainer.Train(policy, tokenizer, pairs, outDir, resume, stop);
        log.WriteLine(result.Summary(outDir));
        return result;
    }

    /// <summary>PPO from an SFT run; with held-out prompts, reports greedy reward and exact match before and after.</summary>
    public static (PpoResult Result, EvalResult? Before, EvalResult? After) RunPpo(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts,
        IReadOnlyList<PromptRecord>? evalPrompts, string outDir, PpoConfig config, TextWriter log, IRewardFunction? gold = null, string? criticInitDir = null,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false) =>
        RunOnline("ppo", invalid => PpoTrainer.FromRunDirectory(initDir, reward, prompts, config, log, gold, criticInitDir, invalid), config.ResponseLength,
            reward, evalPrompts, outDir, log, gold, resume, stop, force, job, skipInvalid);

    /// <summary>
    /// A critic-free run (GRPO, RLOO, REINFORCE++, by <c>algo</c>) from an SFT run, on PPO's rollout and update path; with
    /// held-out prompts, reports greedy reward and exact match before and after.
    /// </summary>
    public static (PpoResult Result, EvalResult? Before, EvalResult? After) RunGrpo(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts,
        IReadOnlyList<PromptRecord>? evalPrompts, string outDir, GrpoConfig config, TextWriter log, IRewardFunction? gold = null,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false) =>
        RunOnline(config.Algo, invalid => PpoTrainer.FromRunDirectory(initDir, reward, prompts, config, log, gold, invalid), config.MaxCompletionLength,
            reward, evalPrompts, outDir, log, gold, resume, stop, force, job, skipInvalid);

    /// <summary>The steps of an online RL run (ppo or grpo): build the trainer, prepare the run directory, evaluate, train, evaluate.</summary>
    private static (PpoResult Result, EvalResult? Before, EvalResult? After) RunOnline(string title, Func<InvalidRecords, PpoTrainer> build, int maxNewTokens,
        IRewardFunction reward, IReadOnlyList<PromptRecord>? evalPrompts, string outDir, TextWriter log, IRewardFunction? gold,
        bool resume, StopSignal? stop, bool force, RunJob? job, bool skipInvalid)
    {
        var invalid = new InvalidRecords(skipInvalid);
        using var trainer = build(invalid);
        ReportInputs(invalid, trainer.Tokenizer, log);
        RunDirectory.PrepareOutput(outDir, force, resume, job);          // after every input has loaded: a bad one writes nothing
        var evalReward = gold ?? reward;
        EvalResult? Eval() => evalPrompts is null ? null : Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, evalPrompts, evalReward, maxNewTokens);
        var before = Eval();
        var result = trainer.Train(outDir, resume, stop);
        var after = Eval();
        log.WriteLine(result.Summary(outDir));
        if (before != null && after != null)
        {
            log.WriteLine($"{title}: held-out greedy {(gold is null ? "reward" : $"gold reward ({gold.Name})")} {before.RewardMean:F3} -> {after.RewardMean:F3}, exact match {before.ExactMatch:P1} -> {after.ExactMatch:P1} (n = {after.N})");
            WriteEvalSummary(outDir, title, evalReward.Name, before, after);
        }
        return (result, before, after);
    }

    /// <summary>The held-out comparison of a ppo run with --eval, in summary.json, which the run's report shows (the "SFT" column is the initial model).</summary>
    private static void WriteEvalSummary(string outDir, string command, string reward, EvalResult before, EvalResult after)
    {
        List<TableRow> table =
        [
            new($"{reward} reward", $"{before.RewardMean:F3}", $"{after.RewardMean:F3}"),
            new("exact match", $"{before.ExactMatch:P1}", $"{after.ExactMatch:P1}"),
            new("response length (tokens)", $"{before.ResponseLength:F1}", $"{after.ResponseLength:F1}"),
        ];
        var summary = new DemoSummary($"{command} --eval", after.N, reward, table, DemoResult.SideBySide(before, after, 12));
        AtomicFile.WriteText(Path.Combine(outDir, Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));
    }

    private static void PrintSummary(DemoResult r, TextWriter log)
    {
        var console = Consoles.For(log);
        var table = new Table().Title($"held-out prompts (n = {r.Sft.N}, greedy)").AddColumn("metric")
            .AddColumn(new TableColumn("SFT").RightAligned()).AddColumn(new TableColumn("PPO").RightAligned());
        foreach (var row in r.Table()) table.AddRow(Markup.Escape(row.Metric), row.Sft, row.Ppo);
        console.Write(table);
        var samples = new Table().Title("samples").AddColumn("prompt").AddColumn("solution").AddColumn("SFT").AddColumn("PPO");
        foreach (var s in r.Samples(8))
            samples.AddRow(Markup.Escape(s.Prompt), Markup.Escape(s.Solution), Mark(s.Sft, s.SftOk), Mark(s.Ppo, s.PpoOk));
        console.Write(samples);
        log.WriteLine($"reward model: held-out pair accuracy {r.RewardModel.Accuracy:P1}, margin {r.RewardModel.RewardMargin:F3}");

        static string Mark(string text, bool ok) => Markup.Escape(text) + (ok ? " ok" : "");
    }
}
