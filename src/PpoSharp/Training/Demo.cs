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
/// Settings of the demo: the built-in task and its data, then a section per trainer (addressed as
/// <c>--set sft.steps=600</c>, <c>--set ppo.iterations=30</c>, <c>grpo.KEY</c>, <c>dpo.KEY</c>, <c>rm.KEY</c>).
/// <see cref="Seed"/> seeds data and every trainer.
/// </summary>
public sealed record DemoConfig
{
    public string Task { get; init; } = "sort";
    [System.ComponentModel.DataAnnotations.Range(1, 10_000_000)] public int TrainRecords { get; init; } = 4000;
    [System.ComponentModel.DataAnnotations.Range(1, 1_000_000)] public int EvalPrompts { get; init; } = 200;
    /// <summary>Share of SFT demonstrations with the task's systematic flaw: room that RL with the rule reward can close.</summary>
    public double Noise { get; init; } = 0.6;
    public int Seed { get; init; } = 1;
    /// <summary>The online methods' reward: the rule (edit distance to the solution) or a reward model trained in the demo (the rule is then logged as gold).</summary>
    public DemoReward Reward { get; init; } = DemoReward.Rule;
    /// <summary>
    /// The methods that start from the SFT model, compared side by side: any of ppo, grpo, dpo, and ppo-lora, grpo-lora
    /// (the same with LoRA adapters of rank <see cref="LoraR"/> on the frozen SFT model), comma-separated; rm adds the reward model.
    /// </summary>
    public string Methods { get; init; } = "ppo,grpo,dpo";
    /// <summary>LoRA rank of ppo-lora and grpo-lora (their other keys, lora_alpha and lora_target_modules, are the ppo and grpo sections').</summary>
    public int LoraR { get; init; } = 8;
    /// <summary>ppo-lora and grpo-lora train at this multiple of the ppo and grpo learning rates (LoRA's rule of thumb: about 10x full fine-tuning's).</summary>
    public double LoraLrScale { get; init; } = LoraKeys.DefaultLrScale;
    public SftConfig Sft { get; init; } = new();
    public RmConfig Rm { get; init; } = new() { Steps = 300 };
    public PpoConfig Ppo { get; init; } = new();
    /// <summary>30 iterations of 16 prompts x 8 samples: PPO's 60 x 64 completions, the same sampling budget.</summary>
    public GrpoConfig Grpo { get; init; } = new() { Iterations = 30 };
    public DpoConfig Dpo { get; init; } = new();

    public static readonly string[] AllMethods = ["ppo", "grpo", "dpo", "rm", "ppo-lora", "grpo-lora"];

    /// <summary>The demo's defaults for <paramref name="task"/>: the word-problems demo's own (<see cref="WordProblemsDemo.Defaults"/>), else these.</summary>
    public static DemoConfig For(string? task) => task == WordProblemsDemo.Task ? WordProblemsDemo.Defaults : new DemoConfig { Task = task ?? "sort" };

    /// <summary>The methods to run, in the order given; the reward model whenever the reward is the model.</summary>
    public IReadOnlyList<string> MethodList
    {
        get
        {
            var list = Methods.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Distinct().ToList();
            if (Reward == DemoReward.Model && !list.Contains("rm")) list.Insert(0, "rm");
            return list;
        }
    }

    public DemoConfig Validate()
    {
        BuiltinTask.Get(Task);
        Check.Positive(TrainRecords, "train_records");
        Check.Positive(EvalPrompts, "eval_prompts");
        Check.InRange(Noise, 0, 1, "noise");
        Check.Positive(LoraR, "lora_r");
        Check.Positive(LoraLrScale, "lora_lr_scale");
        if (MethodList.Count == 0) throw new PpoSharpException($"methods: give at least one of {string.Join(", ", AllMethods)}");
        if (MethodList.FirstOrDefault(m => !AllMethods.Contains(m)) is string bad)
            throw new PpoSharpException($"methods: '{bad}' is not a method (allowed: {string.Join(", ", AllMethods)})");
        if (Task == WordProblemsDemo.Task && MethodList is not ["grpo"])
            throw new PpoSharpException($"methods: the {Task} demo runs SFT then GRPO with {WordProblemsDemo.RewardText} (got '{Methods}'; leave --methods out)");
        Sft.Validate();
        Rm.Validate();
        Ppo.Validate();
        Grpo.Validate();
        Dpo.Validate();
        Check.Ranges(this);
        return this with
        {
            Sft = Sft with { Seed = Seed }, Rm = Rm with { Seed = Seed }, Ppo = Ppo with { Seed = Seed },
            Grpo = Grpo with { Seed = Seed }, Dpo = Dpo with { Seed = Seed },
        };
    }
}

public enum DemoReward { Rule, Model }

/// <summary>One model of the demo's comparison: its held-out evaluation, KL to the SFT model, training time and generated tokens.</summary>
public sealed record MethodResult(string Name, EvalResult Eval, double Kl, double Seconds, double GeneratedTokens);

/// <summary>The demo's held-out comparison of the SFT model and each method trained from it; the reward model's held-out ranking when one was trained.</summary>
public sealed record DemoResult(IReadOnlyList<MethodResult> Models, PairEval? RewardModel)
{
    public MethodResult this[string name] => Models.Single(m => m.Name == name);

    public List<string> Columns() => Models.Select(m => m.Name).ToList();

    public List<TableRow> Table() =>
    [
        Row("edit-distance reward", m => $"{m.Eval.RewardMean:F3}"),
        Row("exact match", m => $"{m.Eval.ExactMatch:P1}"),
        Row("KL to SFT (nats/sequence)", m => $"{m.Kl:F3}"),
        Row("response length (tokens)", m => $"{m.Eval.ResponseLength:F1}"),
        Row("training time (s)", m => $"{m.Seconds:F0}"),
        Row("tokens generated in training", m => $"{m.GeneratedTokens:F0}"),
    ];

    private TableRow Row(string metric, Func<MethodResult, string> value) => new(metric, Models.Select(value).ToList());

    public List<DemoSample> Samples(int count) => SideBySide(Models.Select(m => m.Eval).ToList(), count);

    /// <summary>The first <paramref name="count"/> prompts with each evaluated model's answer.</summary>
    public static List<DemoSample> SideBySide(IReadOnlyList<EvalResult> evals, int count) => Enumerable.Range(0, Math.Min(count, evals[0].Samples.Count))
        .Select(i => new DemoSample(evals[0].Samples[i].Prompt, string.Join(" | ", evals[0].Samples[i].Solutions),
            evals.Select(e => new SampleAnswer(e.Samples[i].Response, e.Samples[i].ExactMatch)).ToList()))
        .ToList();
}

/// <summary>
/// The main job, end to end on a built-in task: writes the task's data in the chat format (a share of the
/// demonstrations flawed), trains the policy with SFT, then from it each method (PPO and GRPO with the rule reward on
/// <c>solution</c>, DPO on the preference pairs), and compares them on held-out prompts (table and samples side by side).
/// </summary>
public static class Demo
{
    public static DemoResult Run(DemoConfig c, string outDir, bool force, TextWriter log)
    {
        if (c.Task == WordProblemsDemo.Task) return WordProblemsDemo.Run(c, outDir, force, log);
        RunDirectory.PrepareOutput(outDir, force);
        var task = BuiltinTask.Get(c.Task);
        var dataDir = Path.Combine(outDir, "data");
        TaskData.Write(task, dataDir, c.TrainRecords, c.EvalPrompts, c.Noise, c.Seed);
        log.WriteLine($"data: task '{task.Name}' ({task.Description}); {c.TrainRecords} demonstrations, {c.Noise:P0} of them flawed; {c.EvalPrompts} held-out prompts -> {dataDir}");

        var sftDir = Path.Combine(outDir, "sft");
        var sft = RunSft(Jsonl.ReadChat(Path.Combine(dataDir, TaskData.SftFile)).Records, null, sftDir, c.Sft, log);
        log.WriteLine(sft.Summary(sftDir));

        var rule = new EditDistance();
        var heldOut = Jsonl.ReadPrompts(Path.Combine(dataDir, TaskData.EvalFile)).Records;
        var (sftModel, tokenizer) = RunDirectory.LoadPolicy(sftDir);
        int maxNew = c.Ppo.ResponseLength;
        using var generator = new torch.Generator((ulong)c.Seed);
        MethodResult Compare(string name, Decoder model, double seconds, double tokens) =>
            new(name, Evaluator.Evaluate(model, tokenizer, heldOut, rule, maxNew),
                name == "SFT" ? 0.0 : Evaluator.KlToReference(model, sftModel, tokenizer, heldOut, maxNew, generator), seconds, tokens);
        var models = new List<MethodResult> { Compare("SFT", sftModel, sft.Seconds, 0) };
        PairEval? rm = null;
        IRewardFunction reward = rule;
        foreach (var method in c.MethodList)
        {
            var dir = Path.Combine(outDir, method);
            if (method == "rm")
            {
                rm = RunRm(Jsonl.ReadPreferences(Path.Combine(dataDir, TaskData.PreferencesFile)).Records, sftDir, dir, c.Rm, log);
                if (c.Reward == DemoReward.Model) reward = RewardModelScorer.Load(dir);
                continue;
            }
            models.Add(RunMethod(method, c, dataDir, sftDir, dir, reward, reward == rule ? null : rule, log, Compare));
        }
        var result = new DemoResult(models, rm);
        PrintSummary(result, log);
        WriteSummary(outDir, new DemoSummary(task.Name, heldOut.Count, reward.Name, result.Columns(), result.Table(), result.Samples(12)));
        log.WriteLine($"report: {Report.Write(outDir)}");
        return result;
    }

    /// <summary>Trains one of the demo's methods from the SFT run and evaluates it with <paramref name="compare"/>.</summary>
    private static MethodResult RunMethod(string method, DemoConfig c, string dataDir, string sftDir, string dir, IRewardFunction reward, IRewardFunction? gold,
        TextWriter log, Func<string, Decoder, double, double, MethodResult> compare)
    {
        if (method == "dpo")
        {
            var dpo = RunDpo(Jsonl.ReadPreferences(Path.Combine(dataDir, TaskData.PreferencesFile)).Records, sftDir, dir, c.Dpo, log);
            using var model = RunDirectory.LoadPolicyModel(dir);
            return compare("DPO", model, dpo.Seconds, 0);
        }
        var prompts = Jsonl.ReadPrompts(Path.Combine(dataDir, TaskData.PromptsFile)).Records;
        bool lora = method.EndsWith("-lora", StringComparison.Ordinal);
        using var trainer = method.StartsWith("ppo", StringComparison.Ordinal)
            ? PpoTrainer.FromRunDirectory(sftDir, reward, prompts, lora ? c.Ppo with { LoraR = c.LoraR, Lr = c.Ppo.Lr * c.LoraLrScale } : c.Ppo, log, gold)
            : PpoTrainer.FromRunDirectory(sftDir, reward, prompts, lora ? c.Grpo with { LoraR = c.LoraR, Lr = c.Grpo.Lr * c.LoraLrScale } : c.Grpo, log, gold);
        var training = trainer.Train(dir);
        log.WriteLine(training.Summary(dir));
        var name = method.Split('-')[0].ToUpperInvariant() + (lora ? " LoRA" : "");
        return compare(name, trainer.Actor, training.Seconds, training.GeneratedTokens);
    }

    /// <summary>SFT from a new model (tokenizer built from the data) or from the run directory <paramref name="initDir"/>.</summary>
    public static SftResult RunSft(IReadOnlyList<ChatRecord> records, string? initDir, string outDir, SftConfig config, TextWriter log,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false)
    {
        torch.manual_seed(config.Seed);
        Decoder model;
        ITokenizer tokenizer;
        if (initDir != null) (model, _, tokenizer) = PpoTrainer.LoadPolicies(initDir, config.Lora, config.ChatTemplateKwargs, needReference: false, log, config.Device.Resolve());
        else
        {
            if (config.Lora.Enabled) throw new PpoSharpException("lora_r: LoRA adapts a trained model; give --init (a new built-in model trains every weight)");
            tokenizer = SftTrainer.NewTokenizer(config.Tokenizer, records);
            model = new Decoder(config.ModelConfig(tokenizer.VocabSize));
        }
        var invalid = new InvalidRecords(skipInvalid);
        var examples = SftTrainer.Tokenize(records, tokenizer, model.Config.ContextLength, invalid, config.MaxLength);
        if (config.MaxLength is int cut && examples.Count(e => e.Ids.Length == cut) is int n and > 0)
            log.WriteLine($"sft: max_length {cut}: records of {cut} tokens or more are cut to {cut} ({n} of {examples.Count} records are {cut} tokens now)");
        ReportInputs(invalid, tokenizer, log);
        config = WithEpochs(config, examples.Count, job, log);
        CheckBatch("sft", config, examples.Count, model, examples.Select(e => e.Ids.Length - 1), 1, logits: true, log);
        model.to(config.Device.Resolve());
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        job?.Announce(log);
        return new SftTrainer(config, log).Train(model, tokenizer, examples, outDir, resume, stop);
    }

    /// <summary>
    /// The supervised trainers' check of batch_size against their <paramref name="records"/> training examples (those left
    /// after eval_fraction) and the machine's memory: <paramref name="perRecord"/> sequences a record of the longest of
    /// <paramref name="lengths"/> tokens (see <see cref="MemoryCheck"/>).
    /// </summary>
    private static void CheckBatch(string title, TrainingConfig config, int records, TorchSharp.torch.nn.Module model, IEnumerable<int> lengths, int perRecord, bool logits, TextWriter log)
    {
        var spec = model is RewardModel rm ? rm.Backbone.Config : ((Decoder)model).Config;
        int train = Training.HeldOut.TrainCount(records, config.EvalFraction);
        MemoryCheck.Check(title, "batch_size", config.BatchSize, train, $"training records (eval_fraction {config.EvalFraction:G} holds {records - train} of {records} out)",
            spec, (long)config.BatchSize * perRecord, lengths.DefaultIfEmpty(1).Max(), logits, MemoryCheck.Trainable(model.parameters()), log);
    }

    /// <summary>
    /// The config with steps from num_train_epochs over the training share of <paramref name="records"/> (unchanged when it
    /// is unset), which <paramref name="job"/> then counts as the run's length; says the count when it is from epochs.
    /// </summary>
    private static T WithEpochs<T>(T config, int records, RunJob? job, TextWriter log) where T : TrainingConfig
    {
        int train = Training.HeldOut.TrainCount(records, config.EvalFraction);
        int steps = config.StepsFor(train);
        job?.Resolve(steps);
        if (config.NumTrainEpochs is not double epochs) return config;
        log.WriteLine($"num_train_epochs {epochs:G}: {steps} steps of {config.GradientAccumulationSteps} x {config.BatchSize} over {train} training records ({config.StepsPerEpoch(train)} per epoch)");
        return (T)(config with { Steps = steps });
    }

    /// <summary>What the trainers' inputs lost once tokenized: skipped records, and characters the model's tokenizer does not know.</summary>
    private static void ReportInputs(InvalidRecords invalid, ITokenizer tokenizer, TextWriter log)
    {
        InvalidRecords.Report(invalid.Skipped, log);
        (tokenizer as CharTokenizer)?.WarnUnknown(log);
    }

    /// <summary>
    /// A reward model whose backbone starts from the SFT run <paramref name="initDir"/>; with <c>ensemble</c> N &gt; 1, N of
    /// them (seeds seed .. seed + N - 1) in <c>member-K/</c>, and <c>ensemble.json</c>, which <c>model:DIR</c> reads.
    /// Returns the (first member's) held-out evaluation.
    /// </summary>
    public static PairEval RunRm(IReadOnlyList<PreferenceRecord> records, string initDir, string outDir, RmConfig config, TextWriter log,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false)
    {
        if (config.Ensemble == 1) return RunOneRm(records, initDir, outDir, config, log, resume, stop, force, job, skipInvalid);
        var (_, spec) = RunDirectory.ReadModel(initDir);                                 // inputs checked before anything is written
        var pairs = RewardTrainer.Tokenize(records, RunDirectory.LoadTokenizer(initDir, RunDirectory.ChatKwargs(config.ChatTemplateKwargs)), spec.ContextLength, new InvalidRecords(skipInvalid));
        config = WithEpochs(config, pairs.Count, job, log);
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        job?.Announce(log);
        var members = Enumerable.Range(0, config.Ensemble).Select(k => $"member-{k}").ToList();
        var evals = members.Select((m, k) =>
        {
            var dir = Path.Combine(outDir, m);
            bool done = resume && RewardModelCard.Read(dir) is not null;                 // a finished member is kept as it is
            log.WriteLine($"rm: ensemble member {k + 1} of {config.Ensemble} (seed {config.Seed + k}){(done ? ": done before" : "")}");
            return done ? null : RunOneRm(records, initDir, dir, config with { Seed = config.Seed + k }, log, resume && Directory.Exists(dir), stop, force, null, skipInvalid);
        }).ToList();
        new Rewards.EnsembleFile(members, config.EnsembleK).Write(outDir);
        log.WriteLine($"rm: ensemble of {config.Ensemble} -> {outDir} (model:{outDir} scores mean - {config.EnsembleK:G} std over the members)");
        return evals.OfType<PairEval>().FirstOrDefault() ?? new PairEval(0, double.NaN, double.NaN, double.NaN);
    }

    private static PairEval RunOneRm(IReadOnlyList<PreferenceRecord> records, string initDir, string outDir, RmConfig config, TextWriter log,
        bool resume, StopSignal? stop, bool force, RunJob? job, bool skipInvalid)
    {
        torch.manual_seed(config.Seed);
        var (backbone, _, tokenizer) = PpoTrainer.LoadPolicies(initDir, config.Lora, config.ChatTemplateKwargs, needReference: false, log, config.Device.Resolve());
        var model = new RewardModel(backbone, mlpHead: Tokenizers.IsBuiltIn(tokenizer));
        var invalid = new InvalidRecords(skipInvalid);
        var pairs = RewardTrainer.Tokenize(records, tokenizer, backbone.Config.ContextLength, invalid);
        ReportInputs(invalid, tokenizer, log);
        config = WithEpochs(config, pairs.Count, job, log);
        CheckBatch("rm", config, pairs.Count, model, pairs.Select(p => Math.Max(p.Chosen.Length, p.Rejected.Length)), 2, logits: false, log);
        model.to(config.Device.Resolve());
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        job?.Announce(log);
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
        var (policy, _, tokenizer) = PpoTrainer.LoadPolicies(initDir, config.Lora, config.ChatTemplateKwargs, needReference: false, log, config.Device.Resolve());
        var invalid = new InvalidRecords(skipInvalid);
        var pairs = DpoTrainer.Tokenize(records, tokenizer, policy.Config.ContextLength, invalid);
        ReportInputs(invalid, tokenizer, log);
        config = WithEpochs(config, pairs.Count, job, log);
        CheckBatch("dpo", config, pairs.Count, policy, pairs.Select(p => Math.Max(p.Chosen.Ids.Length, p.Rejected.Ids.Length)), 2, logits: true, log);
        var device = config.Device.Resolve();
        policy.to(device);
        RunDirectory.PrepareOutput(outDir, force, resume, job);
        job?.Announce(log);
        var trainer = new DpoTrainer(config, log);
        Decoder? reference = null;
        try { pairs = trainer.AttachReference(pairs, () => policy.Base ?? (reference = RunDirectory.LoadPolicyModel(initDir).to(device)), tokenizer.Special.Pad, outDir, resume); }
        finally { reference?.Dispose(); }                                // LoRA: the reference is the shared base, adapters off
        var result = trainer.Train(policy, tokenizer, pairs, outDir, resume, stop);
        log.WriteLine(result.Summary(outDir));
        return result;
    }

    /// <summary>PPO from an SFT run; with held-out prompts, reports greedy reward and exact match before and after.</summary>
    public static (PpoResult Result, EvalResult? Before, EvalResult? After) RunPpo(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts,
        IReadOnlyList<PromptRecord>? evalPrompts, string outDir, PpoConfig config, TextWriter log, IRewardFunction? gold = null, string? criticInitDir = null,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false) =>
        RunOnline("ppo", invalid => PpoTrainer.FromRunDirectory(initDir, reward, prompts, config, log, gold, criticInitDir, invalid),
            HeldOut(evalPrompts, reward, gold, config.EvalEvery, config.ResponseLength, 1.5 * config.KlTarget), reward, evalPrompts, outDir, log, gold, resume, stop, force, job, skipInvalid);

    /// <summary>
    /// The held-out evaluation of a run with --eval: by the gold rule when there is one (or when the reward is itself a
    /// rule), else by the reward model within a KL budget.
    /// </summary>
    private static HeldOutEval? HeldOut(IReadOnlyList<PromptRecord>? prompts, IRewardFunction reward, IRewardFunction? gold, int every, int maxNew, double klBudget) =>
        prompts is null ? null : new HeldOutEval(prompts, gold ?? reward, gold is not null || !RewardSpec.HasModel(reward), every, maxNew, klBudget);

    /// <summary>
    /// A critic-free run (GRPO, RLOO, REINFORCE++, by <c>algo</c>) from an SFT run, on PPO's rollout and update path; with
    /// held-out prompts, reports greedy reward and exact match before and after.
    /// </summary>
    public static (PpoResult Result, EvalResult? Before, EvalResult? After) RunGrpo(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts,
        IReadOnlyList<PromptRecord>? evalPrompts, string outDir, GrpoConfig config, TextWriter log, IRewardFunction? gold = null,
        bool resume = false, StopSignal? stop = null, bool force = false, RunJob? job = null, bool skipInvalid = false) =>
        RunOnline(config.Algo, invalid => PpoTrainer.FromRunDirectory(initDir, reward, prompts, config, log, gold, invalid),
            HeldOut(evalPrompts, reward, gold, config.EvalEvery, config.MaxCompletionLength, double.PositiveInfinity), reward, evalPrompts, outDir, log, gold, resume, stop, force, job, skipInvalid);

    /// <summary>The steps of an online RL run (ppo or grpo): build the trainer, prepare the run directory, evaluate, train, evaluate.</summary>
    private static (PpoResult Result, EvalResult? Before, EvalResult? After) RunOnline(string title, Func<InvalidRecords, PpoTrainer> build, HeldOutEval? heldOut,
        IRewardFunction reward, IReadOnlyList<PromptRecord>? evalPrompts, string outDir, TextWriter log, IRewardFunction? gold,
        bool resume, StopSignal? stop, bool force, RunJob? job, bool skipInvalid)
    {
        var invalid = new InvalidRecords(skipInvalid);
        using var trainer = build(invalid);
        trainer.HeldOut = heldOut;
        int maxNewTokens = heldOut?.MaxNewTokens ?? 0;
        ReportInputs(invalid, trainer.Tokenizer, log);
        trainer.CheckBatch();
        RunDirectory.PrepareOutput(outDir, force, resume, job);          // after every input has loaded: a bad one writes nothing
        job?.Announce(log);
        var evalReward = gold ?? reward;
        EvalResult? Eval() => evalPrompts is null ? null : Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, evalPrompts, evalReward, maxNewTokens);
        var before = trainer.InitialHeldOut = Eval();
        var result = trainer.Train(outDir, resume, stop);
        var after = trainer.LastHeldOut ?? Eval();                       // the last iteration's evaluation when it made one
        log.WriteLine(result.Summary(outDir));
        if (before != null && after != null)
        {
            log.WriteLine($"{title}: held-out greedy {(gold is null ? "reward" : $"gold reward ({gold.Name})")} {before.RewardMean:F3} -> {after.RewardMean:F3}, exact match {before.ExactMatch:P1} -> {after.ExactMatch:P1} (n = {after.N})");
            WriteEvalSummary(outDir, title, evalReward.Name, before, after);
        }
        return (result, before, after);
    }

    /// <summary>The held-out comparison of a ppo or grpo run with --eval, in summary.json, which the run's report shows.</summary>
    private static void WriteEvalSummary(string outDir, string command, string reward, EvalResult before, EvalResult after)
    {
        List<TableRow> table =
        [
            new($"{reward} reward", [$"{before.RewardMean:F3}", $"{after.RewardMean:F3}"]),
            new("exact match", [$"{before.ExactMatch:P1}", $"{after.ExactMatch:P1}"]),
            new("response length (tokens)", [$"{before.ResponseLength:F1}", $"{after.ResponseLength:F1}"]),
        ];
        WriteSummary(outDir, new DemoSummary($"{command} --eval", after.N, reward, ["initial model", $"after {command}"], table, DemoResult.SideBySide([before, after], 12)));
    }

    /// <summary>The held-out comparison as <c>summary.json</c>, which the report shows.</summary>
    internal static void WriteSummary(string outDir, DemoSummary summary) =>
        AtomicFile.WriteText(Path.Combine(outDir, Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));

    private static void PrintSummary(DemoResult r, TextWriter log)
    {
        PrintTables($"held-out prompts (n = {r.Models[0].Eval.N}, greedy)", r.Columns(), r.Table(), r.Samples(8), log);
        if (r.RewardModel is PairEval rm) log.WriteLine($"reward model: held-out pair accuracy {rm.Accuracy:P1}, margin {rm.RewardMargin:F3}");
    }

    /// <summary>The held-out table (a metric a row, a model a column) and the samples side by side, each answer marked "ok" when right.</summary>
    internal static void PrintTables(string title, List<string> columns, List<TableRow> rows, IEnumerable<DemoSample> samples, TextWriter log)
    {
        var console = Consoles.For(log);
        var table = new Table().Title(title).AddColumn("metric");
        foreach (var name in columns) table.AddColumn(new TableColumn(name).RightAligned());
        foreach (var row in rows) table.AddRow([Markup.Escape(row.Metric), .. row.Values]);
        console.Write(table);
        var sampleTable = new Table().Title("samples").AddColumn("prompt").AddColumn("solution");
        foreach (var name in columns) sampleTable.AddColumn(name);
        foreach (var s in samples)
            sampleTable.AddRow([Markup.Escape(s.Prompt), Markup.Escape(s.Solution), .. s.Answers.Select(a => Mark(a.Text, a.Ok))]);
        console.Write(sampleTable);

        static string Mark(string text, bool ok) => Markup.Escape(text) + (ok ? " ok" : "");
    }
}
