using System.CommandLine;
using System.Text.Json;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;
using PpoSharp.Training;
using Training = PpoSharp.Training;
using TorchSharp;

namespace PpoSharp.Cli;

/// <summary>
/// The <c>ppo-sharp</c> command: parses arguments, builds configs and calls the library. A user mistake prints one
/// line on stderr and exits with 2; no stack trace.
/// </summary>
public static class Cli
{
    public const int UserError = 2, Interrupted = 130;

    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        var output = stdout ?? Console.Out;
        var errors = stderr ?? Console.Error;
        var root = new RootCommand("PpoSharp: RLHF for causal language models on TorchSharp: SFT, reward models, PPO, GRPO (RLOO, REINFORCE++), DPO, LoRA adapters; generate, eval, export (Hugging Face folders, GGUF) and serve (OpenAI and SGLang routes)");
        var threads = new Option<int?>("--threads")
        {
            Description = $"CPU threads for torch and the generation workers (default: ${CpuThreads.ThreadsVariable}, else every core, given back while other processes keep cores busy); a fixed count gives bit-identical reruns, and --resume takes a run's fixed count back",
            Recursive = true,
        };
        root.Options.Add(threads);
        var baseDir = new Option<string?>("--base")
        {
            Description = "base model folder of a LoRA adapter given as --init or --model (default: the adapter's base_model_name_or_path)",
            Recursive = true,
        };
        root.Options.Add(baseDir);
        foreach (var command in Commands.All(output, errors)) root.Subcommands.Add(command);
        var parsed = root.Parse(args);
        if (args.Length > 0 && !args[0].StartsWith('-') && root.Subcommands.All(c => c.Name != args[0]))
        {
            var closest = root.Subcommands.Select(c => c.Name).MinBy(name => Rewards.EditDistance.Levenshtein([.. args[0]], [.. name]));
            errors.WriteLine($"error: unknown command '{args[0]}' (did you mean '{closest}'? see 'ppo-sharp --help')");
            return UserError;
        }
        if (parsed.Errors.Count > 0)
        {
            errors.WriteLine($"error: {parsed.Errors[0].Message.ReplaceLineEndings(" ")} (see 'ppo-sharp --help')");
            return UserError;
        }
        try
        {
            NativeHeap.KeepFreedMemory();                 // a step's freed tensors stay for the next, not unmapped and zeroed again
            CpuThreads.Configure(parsed.GetValue(threads));
            if (parsed.GetValue(baseDir) is string b) Models.Hf.PeftAdapter.UseBase(Commands.AdapterArgument(parsed) ?? throw new PpoSharpException("--base goes with an --init or --model that is a LoRA adapter folder"), b);
            foreach (var (flag, path) in Commands.Outputs(parsed)) OutputGuard.Check(flag, path, Commands.Inputs(parsed));
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = output, Error = errors });
        }
        catch (TrainingStoppedException e)
        {
            errors.WriteLine(e.Message);
            return e.Interrupted ? Interrupted : 1;
        }
        catch (PpoSharpException e)
        {
            errors.WriteLine($"error: {e.Message}");
            return UserError;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("PPOSHARP_TRACE") != "1")
        {
            errors.WriteLine($"internal error: {e.GetType().Name}: {e.Message.Split('\n')[0]} (a bug: please report it; PPOSHARP_TRACE=1 shows the stack trace)");
            return 1;
        }
    }
}

internal static partial class Commands
{
    /// <summary>Options whose value is a file or folder that the command reads.</summary>
    private static readonly string[] InputOptions = ["--init", "--model", "--base", "--critic-init", "--data", "--eval", "--config"];

    /// <summary>
    /// What a command reads, as (option, path): the files and folders of <see cref="InputOptions"/>, the <c>model:DIR</c>
    /// folders of --reward and --gold, and the base folder of an --init or --model that is a LoRA adapter.
    /// </summary>
    internal static IEnumerable<(string Flag, string? Path)> Inputs(ParseResult parsed)
    {
        var options = parsed.CommandResult.Command.Options.Concat(parsed.RootCommandResult.Command.Options).OfType<Option<string>>().ToList();
        foreach (var o in options)
        {
            if (parsed.GetResult(o) is null && o.Name != "--base") continue;
            var value = parsed.GetValue(o);
            if (value is null) continue;
            if (InputOptions.Contains(o.Name)) yield return (o.Name, value);
            if (o.Name is "--reward" or "--gold")
                foreach (var dir in RewardSpec.ModelDirs(value)) yield return ($"{o.Name} model:", dir);
        }
        if (AdapterArgument(parsed) is string adapter && Models.Hf.PeftAdapter.IsAdapter(adapter) && AdapterBase(adapter) is string b)
            yield return ("base of the adapter", b);
    }

    /// <summary>The base folder of an adapter, or null when it cannot be found (its load reports that).</summary>
    private static string? AdapterBase(string adapter)
    {
        try { return Models.Hf.PeftAdapter.BaseDir(adapter); }
        catch (PpoSharpException) { return null; }
    }

    /// <summary>What a command writes, as (option, path): its --out folder or file (the demo's default included) and eval's --samples.</summary>
    internal static IEnumerable<(string Flag, string Path)> Outputs(ParseResult parsed) => parsed.CommandResult.Command.Options.OfType<Option<string>>()
        .Where(o => o.Name is "--out" or "--samples" && parsed.GetResult(o)?.Tokens.Count > 0).Select(o => (o.Name, parsed.GetValue(o)!)).Where(p => p.Item2 is not null);   // absent (--help): nothing to check

    /// <summary>The folder given as --init or --model, if the command has either.</summary>
    internal static string? AdapterArgument(ParseResult parsed) => parsed.CommandResult.Command.Options
        .Where(o => o.Name is "--init" or "--model").Select(o => parsed.GetResult(o)?.GetValueOrDefault<string?>()).FirstOrDefault(v => v is not null);
}

/// <summary>Options shared by the training commands.</summary>
internal sealed class TrainingOptions
{
    public readonly Option<string?> Config = new("--config") { Description = "JSON or YAML (.yaml, .yml) file of config keys (snake_case; TRL's names below work too)" };
    public readonly Option<string[]> Set = new("--set")
    {
        Description = "override one config key: --set key=value (repeatable). TRL's names are accepted: " +
            string.Join(", ", ConfigLoader.Aliases.Select(a => $"{a.Key} ({a.Value})")) + "; max_steps and per_device_train_batch_size in sft, rm and dpo only",
        AllowMultipleArgumentsPerToken = false,
    };
    public readonly Option<int?> Seed = new("--seed") { Description = "random seed (overrides the config's seed)" };
    public readonly Option<bool> Force = new("--force") { Description = "start over in a non-empty --out directory (its metrics and checkpoints are removed)" };
    public readonly Option<bool> Resume = new("--resume") { Description = "continue the run in --out from its newest usable checkpoint" };
    public readonly Option<bool> SkipInvalid = new("--skip-invalid") { Description = "count and report invalid records instead of stopping at the first" };
    public readonly Option<string?> Split = SplitOption("--split", "--data", "train");

    /// <summary>The option choosing the split of a dataset folder given as <paramref name="of"/>.</summary>
    public static Option<string?> SplitOption(string name, string of, string fallback) => new(name)
    {
        Description = $"split of a Hugging Face dataset folder given as {of}: train, test or validation (default {fallback}); a file takes none",
    };

    public void AddTo(Command c)
    {
        c.Options.Add(Config);
        c.Options.Add(Set);
        c.Options.Add(Seed);
        c.Options.Add(Force);
        c.Options.Add(SkipInvalid);
        if (c.Name == "demo") return;
        c.Options.Add(Resume);
        c.Options.Add(Split);
    }

    /// <summary>The config: TRL-like defaults when <paramref name="init"/> is a pretrained Hugging Face model, the built-in ones otherwise; then --config and --set.</summary>
    public SftConfig Sft(ParseResult r, string? init) => Load(r, Tokenizers.IsPretrained(init) ? SftConfig.Pretrained : new SftConfig(), c => c.Validate(), loraDefault: init is not null);

    public PpoConfig Ppo(ParseResult r, string init) => Load(r, Tokenizers.IsPretrained(init) ? PpoConfig.Pretrained : new PpoConfig(), c => c.Validate());

    public GrpoConfig Grpo(ParseResult r, string init) => Load(r, Tokenizers.IsPretrained(init) ? GrpoConfig.Pretrained : new GrpoConfig(), c => c.Validate());

    /// <summary>The demo's config on the defaults of <paramref name="task"/> (--task), else of the task --config or --set names.</summary>
    public DemoConfig Demo(ParseResult r, string? task)
    {
        var config = Load(r, DemoConfig.For(task), c => c.Validate());
        return task is null && config.Task != new DemoConfig().Task ? Load(r, DemoConfig.For(config.Task), c => c.Validate()) : config;
    }

    public RmConfig Rm(ParseResult r, string init, IEnumerable<string> sets) => Load(r, Tokenizers.IsPretrained(init) ? RmConfig.Pretrained : new RmConfig(), c => c.Validate(), sets);

    public DpoConfig Dpo(ParseResult r, string init) => Load(r, Tokenizers.IsPretrained(init) ? DpoConfig.Pretrained : new DpoConfig(), c => c.Validate());

    /// <summary>
    /// The steps every training command takes once its config and other inputs are read: read <paramref name="data"/>
    /// (reporting skipped lines), check <paramref name="outDir"/> against --force and --resume, and run
    /// <paramref name="train"/>(records, dir, stop) while Ctrl+C and SIGTERM are caught.
    /// </summary>
    public int Train<T>(ParseResult r, Option<string> data, Option<string> outDir, Func<string, bool, JsonlResult<T>> read, TextWriter output, TextWriter errors,
        RunJob job, Action<IReadOnlyList<T>, string, StopSignal> train)
    {
        var dir = r.GetValue(outDir)!;
        bool resume = r.GetValue(Resume);
        if (resume && Directory.Exists(dir))
        {
            job.CheckSameJob(dir);
            if (job.FinishedAt(dir) is int done)
            {
                output.WriteLine(job.FinishedMessage(dir, done));
                return 0;
            }
        }
        var records = read(r.GetValue(data)!, r.GetValue(SkipInvalid));
        InvalidRecords.Report(records.Skipped, errors);
        RunDirectory.CheckOutput(dir, r.GetValue(Force), resume);
        job.Threads = CpuThreads.ForRun(resume ? RunJob.RecordedThreads(dir) : null, errors);      // a fixed count, recorded for --resume
        if (Note is not null) job.Note = $"{job.Command}: {Note}";
        using var stop = StopSignal.Listen();
        try { RunDirectory.CleanUpFailedStart(dir, resume, () => { train(records.Records, dir, stop); return 0; }); }
        catch (RunFinishedException e) { output.WriteLine(e.Message); }
        return 0;
    }

    /// <summary>What the run's first lines say about a default chosen for the user (the LoRA learning rate), or null.</summary>
    public string? Note { get; private set; }

    /// <summary>
    /// The config from <paramref name="defaults"/>, --config and --set; a LoRA run (lora_r &gt; 0) given no lr trains at
    /// <see cref="LoraKeys.DefaultLrScale"/> x the default lr, which <see cref="Note"/> then says.
    /// </summary>
    private T Load<T>(ParseResult r, T defaults, Func<T, T> validate, IEnumerable<string>? extra = null, bool loraDefault = true) where T : class
    {
        var sets = (extra ?? []).Concat(r.GetValue(Set) ?? []).ToList();
        if (r.GetValue(Seed) is int seed) sets.Add($"seed={seed}");
        var config = ConfigLoader.Load(defaults, r.GetValue(Config), sets, validate);
        if (!loraDefault || config is not LoraKeys { LoraR: > 0 } lora || ConfigLoader.Gives(r.GetValue(Config), sets, "lr")
            || JsonSerializer.SerializeToNode(defaults, Json.Options)?["lr"]?.GetValue<double>() is not double full) return config;
        double lr = full * LoraKeys.DefaultLrScale;
        Note = $"LoRA (lora_r {lora.LoraR}) and no lr given: lr {lr:0.#########}, {LoraKeys.DefaultLrScale:G}x the full-model default {full:0.#########} (set lr to choose)";
        return ConfigLoader.Load(defaults, r.GetValue(Config), [.. sets, $"lr={lr.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}"], validate);
    }
}

internal static partial class Commands
{
    public static IEnumerable<Command> All(TextWriter output, TextWriter errors) =>
        [Demo(output), Data(output), Sft(output, errors), Rm(output, errors), Dpo(output, errors), Ppo(output, errors), Grpo(output, errors), Generate(output, errors), Inspect(output), Eval(output, errors), ExportCommand(output), ReportCommand(output), BenchCommand(output), ServeCommand(output, errors), ScoreCommand(output)];

    internal static Option<string> Required(string name, string description) => new(name) { Description = description, Required = true };

    private static Command Demo(TextWriter output)
    {
        var outDir = new Option<string>("--out") { Description = "run directory", DefaultValueFactory = _ => "runs/demo" };
        var task = new Option<string?>("--task") { Description = "built-in task: " + string.Join(", ", BuiltinTask.All.Select(t => t.Name)) + " (default sort)" };
        var methods = new Option<string?>("--methods") { Description = "methods trained from the SFT model and compared: any of ppo, grpo, dpo, rm, ppo-lora, grpo-lora (default ppo,grpo,dpo; rm also trains the reward model; *-lora train LoRA adapters of rank lora_r on the frozen SFT model)" };
        var opts = new TrainingOptions();
        var c = new Command("demo", "the main job on a built-in task: data -> SFT -> PPO, GRPO, DPO -> held-out table and samples") { outDir, task, methods };
        opts.AddTo(c);
        c.SetAction(r =>
        {
            var config = opts.Demo(r, r.GetValue(task));
            if (r.GetValue(methods) is string m) config = (config with { Methods = m }).Validate();
            Training.Demo.Run(config, r.GetValue(outDir)!, r.GetValue(opts.Force), output);
            return 0;
        });
        return c;
    }

    private static Command Data(TextWriter output)
    {
        var outDir = Required("--out", "directory for sft.jsonl, prompts.jsonl, eval.jsonl, preferences.jsonl (word-problems: a Hugging Face dataset folder of Parquet files, data/{train,test}-00000-of-00001.parquet with question and answer, sft/train-00000-of-00001.parquet with messages)");
        var task = new Option<string>("--task") { Description = "built-in task: " + string.Join(", ", BuiltinTask.All.Select(t => t.Name)), DefaultValueFactory = _ => "sort" };
        var train = new Option<int>("--train") { Description = "training records", DefaultValueFactory = _ => 4000 };
        var eval = new Option<int>("--eval") { Description = "held-out prompts", DefaultValueFactory = _ => 200 };
        var noise = new Option<double>("--noise") { Description = "share of SFT demonstrations with the task's systematic flaw (sort: descending; add: no carries; word-problems: the wrong operation at one step)", DefaultValueFactory = _ => 0.0 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var force = new Option<bool>("--force") { Description = "write into a non-empty --out directory" };
        var pairs = new Option<string>("--pairs") { Description = "rejected answers of preferences.jsonl: mixed (half the task's flaw, half one letter wrong) or one-letter (all one letter wrong: hard to rank)", DefaultValueFactory = _ => "mixed" };
        var c = new Command("data", "writes a built-in task's data files in the chat format") { outDir, task, train, eval, noise, seed, force, pairs };
        c.SetAction(r =>
        {
            var t = BuiltinTask.Get(r.GetValue(task)!);
            Check.Positive(r.GetValue(train), "--train");
            Check.Positive(r.GetValue(eval), "--eval");
            Check.InRange(r.GetValue(noise), 0, 1, "--noise");
            if (!r.GetValue(force) && Directory.Exists(r.GetValue(outDir)) && Directory.EnumerateFileSystemEntries(r.GetValue(outDir)!).Any())
                throw new PpoSharpException($"{r.GetValue(outDir)}: output directory is not empty (use --force to write into it, or another --out)");
            var kind = r.GetValue(pairs) switch { "mixed" => PairKind.Mixed, "one-letter" => PairKind.OneLetter, var p => throw new PpoSharpException($"--pairs: '{p}' is not a kind (mixed, one-letter)") };
            if (t is WordProblemsTask)
            {
                var (n, m) = TaskDataset.Write(t, r.GetValue(outDir)!, r.GetValue(train), r.GetValue(eval), r.GetValue(noise), r.GetValue(seed));
                output.WriteLine($"wrote task '{t.Name}' ({t.Description}) to {r.GetValue(outDir)}: {n} training and {m} held-out questions" +
                    (n < r.GetValue(train) || m < r.GetValue(eval) ? " (fewer than asked: the task has no more distinct questions)" : ""));
                return 0;
            }
            TaskData.Write(t, r.GetValue(outDir)!, r.GetValue(train), r.GetValue(eval), r.GetValue(noise), r.GetValue(seed), kind);
            output.WriteLine($"wrote task '{t.Name}' ({t.Description}) to {r.GetValue(outDir)}");
            return 0;
        });
        return c;
    }

    private static Command Sft(TextWriter output, TextWriter errors)
    {
        var data = Required("--data", "language-modelling or prompt-completion records (TRL's formats: {\"text\"}, {\"messages\"}, {\"prompt\", \"completion\"}): .jsonl, .json, .parquet or a Hugging Face dataset folder");
        var outDir = Required("--out", "run directory to write");
        var init = new Option<string?>("--init") { Description = "run directory of a model to start from (default: a new model from the config)" };
        var opts = new TrainingOptions();
        var c = new Command("sft", "supervised fine-tuning on chat records (loss on assistant tokens only)") { data, outDir, init };
        opts.AddTo(c);
        c.SetAction(r =>
        {
            var config = opts.Sft(r, r.GetValue(init));
            var job = new RunJob("sft", config).With("init", r.GetValue(init)).With("data", r.GetValue(data));
            var dataOptions = config.Data(r.GetValue(opts.Split), "sft");
            return opts.Train(r, data, outDir, (path, skip) => Jsonl.ReadChat(path, skip, dataOptions), output, errors, job, (records, dir, stop) => output.WriteLine(
                Training.Demo.RunSft(records, r.GetValue(init), dir, config, output, r.GetValue(opts.Resume), stop, r.GetValue(opts.Force),
                    job, r.GetValue(opts.SkipInvalid)).Summary(dir)));
        });
        return c;
    }

    private static Command Ppo(TextWriter output, TextWriter errors) => Online("ppo", "PPO from prompts with a reward (actor, critic, reference, GAE; see docs/method.md)", output, errors);

    private static Command Grpo(TextWriter output, TextWriter errors) => Online("grpo",
        "critic-free RL from prompts with a reward, on PPO's rollout path: GRPO (default), Dr. GRPO and DAPO options, RLOO, REINFORCE++ (--set algo=rloo|reinforce++|reinforce++-baseline)",
        output, errors);

    /// <summary>The ppo and grpo commands: the same inputs and steps, PPO's config and critic or the critic-free config.</summary>
    private static Command Online(string name, string description, TextWriter output, TextWriter errors)
    {
        bool ppo = name == "ppo";
        var data = Required("--data", "prompt-only records ({\"prompt\"} or {\"messages\"}, with the solution and other columns the rewards read): .jsonl, .json, .parquet or a Hugging Face dataset folder");
        var init = Required("--init", ppo ? "run directory of the SFT model (actor, reference and critic start from it)" : "run directory of the SFT model (policy and reference start from it)");
        var reward = Required("--reward", "reward spec, e.g. edit-distance or exact-match,repetition:0.2");
        var outDir = Required("--out", "run directory to write");
        var eval = new Option<string?>("--eval") { Description = "held-out prompts: greedy reward of the initial and final model" };
        var gold = new Option<string?>("--gold") { Description = "rule reward logged as gold_reward_mean beside a model reward (and used by --eval)" };
        var criticInit = new Option<string?>("--critic-init") { Description = "reward-model directory to initialise the critic from" };
        var evalSplit = TrainingOptions.SplitOption("--eval-split", "--eval", "test");
        var opts = new TrainingOptions();
        var c = new Command(name, description) { data, init, reward, outDir, eval, evalSplit, gold };
        if (ppo) c.Options.Add(criticInit);
        opts.AddTo(c);
        c.SetAction(r =>
        {
            PpoConfig? ppoConfig = ppo ? opts.Ppo(r, r.GetValue(init)!) : null;
            GrpoConfig? grpoConfig = ppo ? null : opts.Grpo(r, r.GetValue(init)!);
            var rewardOptions = grpoConfig?.RewardOptions() ?? new RewardOptions { MaxCompletionLength = ppoConfig!.ResponseLength };
            var rewardFunction = RewardSpec.Parse(r.GetValue(reward)!, options: rewardOptions);
            var goldFunction = r.GetValue(gold) is string g ? RewardSpec.Parse(g, "--gold") : null;
            var dataOptions = ((DataKeys?)ppoConfig ?? grpoConfig!).Data(r.GetValue(opts.Split), name);
            var evalPrompts = r.GetValue(eval) is string e ? RewardChecks.RequireSolutions(Jsonl.ReadPrompts(e, false,
                (dataOptions with { Split = r.GetValue(evalSplit) ?? (Directory.Exists(e) ? "test" : null) }).Validate()), false, goldFunction ?? rewardFunction).Records : null;
            JsonlResult<PromptRecord> Read(string path, bool skip) => RewardChecks.RequireSolutions(Jsonl.ReadPrompts(path, skip, dataOptions), skip, rewardFunction, goldFunction);
            var job = new RunJob(name, (object?)ppoConfig ?? grpoConfig!).With("init", r.GetValue(init)).With("data", r.GetValue(data)).With("reward", r.GetValue(reward))
                .With("gold", r.GetValue(gold)).With("critic_init", ppo ? r.GetValue(criticInit) : null);
            return opts.Train(r, data, outDir, Read, output, errors, job, (prompts, dir, stop) =>
            {
                if (ppoConfig is not null)
                    Training.Demo.RunPpo(r.GetValue(init)!, rewardFunction, prompts, evalPrompts, dir, ppoConfig, output, goldFunction, r.GetValue(criticInit),
                        r.GetValue(opts.Resume), stop, r.GetValue(opts.Force), job, r.GetValue(opts.SkipInvalid));
                else
                    Training.Demo.RunGrpo(r.GetValue(init)!, rewardFunction, prompts, evalPrompts, dir, grpoConfig!, output, goldFunction,
                        r.GetValue(opts.Resume), stop, r.GetValue(opts.Force), job, r.GetValue(opts.SkipInvalid));
            });
        });
        return c;
    }

    private static Command Rm(TextWriter output, TextWriter errors)
    {
        var ensemble = new Option<int?>("--ensemble") { Description = "train N reward models (seeds seed .. seed + N - 1) as an ensemble scored mean - k std (key ensemble; k: ensemble_k, default 1)" };
        var c = PairCommand("rm",
            "reward model from preference pairs, Bradley-Terry loss (a linear score head on a pretrained model, as transformers' *ForSequenceClassification; an MLP head on a built-in one)",
            "run directory of the SFT model whose backbone the reward model starts from", output, errors,
            (o, r, init) => o.Rm(r, init, r.GetValue(ensemble) is int n ? [$"ensemble={n}"] : []),
            (records, config, p) => Training.Demo.RunRm(records, p.Init, p.Dir, config, output, p.Resume, p.Stop, p.Force, p.Job, p.SkipInvalid));
        c.Options.Add(ensemble);
        return c;
    }

    private static Command Dpo(TextWriter output, TextWriter errors) => PairCommand("dpo",
        "Direct Preference Optimization from preference pairs (no reward model; the reference is the --init policy)",
        "run directory or Hugging Face folder of the policy to start from (the frozen reference is a copy of it)", output, errors, (o, r, init) => o.Dpo(r, init),
        (records, config, p) => Training.Demo.RunDpo(records, p.Init, p.Dir, config, output, p.Resume, p.Stop, p.Force, p.Job, p.SkipInvalid));

    /// <summary>What a training command on preference pairs is given besides its records and config.</summary>
    private sealed record PairRun(string Init, string Dir, bool Resume, StopSignal Stop, bool Force, RunJob Job, bool SkipInvalid);

    /// <summary>A training command on preference pairs (rm, dpo): --data, --init, --out and the common options.</summary>
    private static Command PairCommand<TConfig>(string name, string description, string initDescription, TextWriter output, TextWriter errors,
        Func<TrainingOptions, ParseResult, string, TConfig> loadConfig, Action<IReadOnlyList<PreferenceRecord>, TConfig, PairRun> train) where TConfig : DataKeys
    {
        var data = Required("--data", "preference records ({\"prompt\", \"chosen\", \"rejected\"} or an implicit prompt {\"chosen\", \"rejected\"}): .jsonl, .json, .parquet or a Hugging Face dataset folder");
        var init = Required("--init", initDescription);
        var outDir = Required("--out", "run directory to write");
        var opts = new TrainingOptions();
        var c = new Command(name, description) { data, init, outDir };
        opts.AddTo(c);
        c.SetAction(r =>
        {
            var config = loadConfig(opts, r, r.GetValue(init)!);
            var job = new RunJob(name, config).With("init", r.GetValue(init)).With("data", r.GetValue(data));
            var dataOptions = config.Data(r.GetValue(opts.Split), name);
            return opts.Train(r, data, outDir, (path, skip) => Jsonl.ReadPreferences(path, skip, dataOptions), output, errors, job, (records, dir, stop) => train(records, config,
                new PairRun(r.GetValue(init)!, dir, r.GetValue(opts.Resume), stop, r.GetValue(opts.Force), job, r.GetValue(opts.SkipInvalid))));
        });
        return c;
    }

    private static Command ReportCommand(TextWriter output)
    {
        var dir = new Argument<string>("dir") { Description = "run directory (a demo run, or one sft, rm or ppo run)" };
        var c = new Command("report", "(re)writes a run's plots and report.html from its metrics.jsonl") { dir };
        c.SetAction(r =>
        {
            output.WriteLine($"report: {PpoSharp.Reporting.Report.Write(r.GetValue(dir)!)}");
            return 0;
        });
        return c;
    }

    private static Command BenchCommand(TextWriter output)
    {
        var json = new Option<string?>("--json") { Description = "also write the figures to this JSON file" };
        var quick = new Option<bool>("--quick") { Description = "fewer repeats and a shorter soak (under 2 minutes)" };
        var asCopy = new Option<bool>("--as-copy") { Description = "run only the competing copy's PPO loop (started by bench itself)", Hidden = true };
        var loraCase = new Option<string?>("--lora-case") { Description = "run only one case (full, lora, lora_checkpointing or bf16) of the LoRA figure (started by bench itself)", Hidden = true };
        var loraDir = new Option<string?>("--lora-dir") { Hidden = true };
        var loraIterations = new Option<int>("--lora-iterations") { Hidden = true, DefaultValueFactory = _ => 3 };
        var c = new Command("bench", "speed and memory figures against the machine's measured fp32 GEMM throughput, alone and beside a copy of itself") { json, quick, asCopy, loraCase, loraDir, loraIterations };
        c.SetAction(r =>
        {
            if (r.GetValue(loraCase) is string mode)
            {
                PpoSharp.Benchmarks.Bench.RunLoraCase(mode, r.GetValue(loraDir)!, r.GetValue(loraIterations), output);
                return 0;
            }
            if (r.GetValue(asCopy))
            {
                PpoSharp.Benchmarks.Bench.RunAsCopy(output, Console.In);
                return 0;
            }
            var figures = PpoSharp.Benchmarks.Bench.Run(r.GetValue(quick), output, PpoSharp.Benchmarks.Bench.StartSelf);
            PpoSharp.Benchmarks.Bench.Print(figures, output);
            if (r.GetValue(json) is string path) File.WriteAllText(path, JsonSerializer.Serialize(figures, Json.Options));
            return 0;
        });
        return c;
    }

}
