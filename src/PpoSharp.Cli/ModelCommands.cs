using System.CommandLine;
using System.Text.Json;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;
using PpoSharp.Training;
using TorchSharp;

namespace PpoSharp.Cli;

/// <summary>Commands that show what a model does and sees: <c>generate</c>, <c>eval</c> and <c>inspect</c>.</summary>
internal static partial class Commands
{
    private static Command Generate(TextWriter output, TextWriter errors)
    {
        var model = Required("--model", "a PpoSharp run or a Hugging Face model folder holding a policy");
        var prompt = new Option<string?>("--prompt") { Description = "the user message (rendered with the model's chat template unless --raw)" };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "token ids fed as they are, e.g. 1,2,3" };
        var system = new Option<string?>("--system") { Description = "a system message before the user message" };
        var raw = new Option<bool>("--raw") { Description = "encode --prompt as plain text (with the tokenizer's BOS where it adds one), no chat template" };
        var json = new Option<bool>("--json") { Description = "print one JSON object: prompt_ids, ids (new), text, logprobs (log p of each new id at temperature 1), sampling (the settings used and where they came from)" };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 32 };
        var greedy = new Option<bool>("--greedy") { Description = "decode greedily, whatever generation_config.json says" };
        var temperature = new Option<double?>("--temperature") { Description = "sample at this temperature (0 = greedy); default: generation_config.json's settings, as transformers uses them (greedy when it has no do_sample: true)" };
        var topK = new Option<int?>("--top-k") { Description = "sample from the k most likely tokens (0 = all; default: generation_config.json's, transformers' 50 where it sets none)" };
        var topP = new Option<double?>("--top-p") { Description = "nucleus sampling threshold (default: generation_config.json's, else 1)" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var (dtype, device, kwargs) = (DtypeOption(), DeviceOption(), ChatKwargsOption());
        var c = new Command("generate", "one completion of a prompt") { model, prompt, promptIds, system, raw, json, maxNew, greedy, temperature, topK, topP, seed, dtype, device, kwargs };
        c.SetAction(r =>
        {
            Check.Positive(r.GetValue(maxNew), "--max-new-tokens");
            if (r.GetValue(temperature) is double tg) Check.AtLeast(tg, 0, "--temperature");
            if (r.GetValue(topK) is int kg) Check.AtLeast(kg, 0, "--top-k");
            if (r.GetValue(topP) is double pg && !(pg is > 0 and <= 1)) throw new PpoSharpException($"--top-p must be in (0, 1] (got {pg})");
            var settings = GenerationSettings.Resolve(r.GetValue(model)!, r.GetValue(greedy), r.GetValue(temperature), r.GetValue(topK), r.GetValue(topP));
            var (policy, tokenizer) = RunDirectory.LoadPolicy(r.GetValue(model)!, ChatKwargs(r.GetValue(kwargs)));
            policy.to(r.GetValue(device).Resolve()).ComputeIn(r.GetValue(dtype));
            var ids = PromptIds(tokenizer, r.GetValue(prompt), r.GetValue(promptIds), r.GetValue(system), r.GetValue(raw));
            (tokenizer as CharTokenizer)?.WarnUnknown(errors);
            using var generator = new torch.Generator((ulong)r.GetValue(seed));
            var completion = Inspection.Complete(policy, tokenizer, ids, settings.Options(r.GetValue(maxNew)), generator);
            if (!r.GetValue(json)) output.WriteLine(completion.Text);
            else
            {
                var o = JsonSerializer.SerializeToNode(completion, Json.Compact)!.AsObject();
                o["sampling"] = JsonSerializer.SerializeToNode(settings, Json.Compact);
                output.WriteLine(o.ToJsonString(Json.Compact));
            }
            return 0;
        });
        return c;
    }

    /// <summary>The prompt's ids: --prompt-ids as given, or --prompt (and --system) through the chat template, or as plain text with --raw.</summary>
    private static List<int> PromptIds(ITokenizer tokenizer, string? prompt, string? promptIds, string? system, bool raw)
    {
        if ((prompt is null) == (promptIds is null)) throw new PpoSharpException("give either --prompt TEXT or --prompt-ids 1,2,3");
        if (promptIds is not null)
        {
            if (system is not null || raw) throw new PpoSharpException("--system and --raw apply to --prompt, not to --prompt-ids");
            return promptIds.Split(',').Select(s => int.TryParse(s.Trim(), out var id) ? id
                : throw new PpoSharpException($"--prompt-ids: '{s}' is not an integer (expected a comma-separated list such as 1,2,3)")).ToList();
        }
        if (prompt!.Length == 0) throw new PpoSharpException("--prompt is empty");
        if (raw) return system is not null ? throw new PpoSharpException("--system needs the chat template (leave out --raw)")
            : [.. Tokenizers.EncodeText(tokenizer, prompt)];
        List<ChatMessage> messages = system is null ? [] : [new(Role.System, system)];
        messages.Add(new ChatMessage(Role.User, prompt));
        return tokenizer.Chat.EncodePrompt(messages);
    }

    internal static Option<ComputeDtype> DtypeOption() => new("--dtype")
    {
        Description = "compute dtype: auto (fp32 on the CPU), float32, or bfloat16 (faster on CPUs with AVX512-BF16)", DefaultValueFactory = _ => ComputeDtype.Auto,
    };

    internal static Option<ComputeDevice> DeviceOption() => new("--device")
    {
        Description = "cpu (default), or cuda with TorchSharp's CUDA package", DefaultValueFactory = _ => ComputeDevice.Cpu,
    };

    internal static Option<string?> ChatKwargsOption() => new("--chat-template-kwargs")
    {
        Description = "extra chat-template variables as a JSON object, e.g. '{\"enable_thinking\": false}' for Qwen3",
    };

    /// <summary>The --chat-template-kwargs object, or none.</summary>
    internal static IReadOnlyDictionary<string, object?>? ChatKwargs(string? json)
    {
        if (json is null) return null;
        try
        {
            return System.Text.Json.Nodes.JsonNode.Parse(json) is System.Text.Json.Nodes.JsonObject o ? o.ToDictionary(p => p.Key, p => (object?)p.Value?.DeepClone())
                : throw new PpoSharpException("--chat-template-kwargs must be a JSON object, e.g. {\"enable_thinking\": false}");
        }
        catch (JsonException) { throw new PpoSharpException("--chat-template-kwargs must be a JSON object, e.g. {\"enable_thinking\": false}"); }
    }

    private static Command Eval(TextWriter output, TextWriter errors)
    {
        var model = Required("--model", "run directory of a policy, or of a reward model (then --data holds preference pairs)");
        var data = Required("--data", "prompts with solution, or preference pairs for a reward model (JSON Lines)");
        var reward = new Option<string>("--reward") { Description = "reward spec, e.g. edit-distance or exact-match,edit-distance:0.5", DefaultValueFactory = _ => "exact-match" };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 32 };
        var skipInvalid = new Option<bool>("--skip-invalid") { Description = "count and report invalid records instead of stopping at the first" };
        var (dtype, device, kwargs) = (DtypeOption(), DeviceOption(), ChatKwargsOption());
        var samples = new Option<string?>("--samples") { Description = "also write one JSON line per prompt: prompt, solution, response, reward, exact_match" };
        var (split, set) = DataOptionsFlags();
        var c = new Command("eval", "greedy decoding on a prompt file, or a reward model's ranking of pairs; prints one JSON object") { model, data, reward, maxNew, skipInvalid, dtype, device, kwargs, samples, split, set };
        c.SetAction(r =>
        {
            var dataOptions = DataOptionsOf(r, split, set, "eval");
            if (RunDirectory.IsScalarModel(r.GetValue(model)!))
            {
                var pairs = Jsonl.ReadPreferences(r.GetValue(data)!, r.GetValue(skipInvalid), dataOptions);
                InvalidRecords.Report(pairs.Skipped, errors);
                var (rm, rmTokenizer) = RunDirectory.LoadRewardModel(r.GetValue(model)!);
                var e = RewardTrainer.Evaluate(rm, RewardTrainer.Tokenize(pairs.Records, rmTokenizer, rm.Backbone.Config.ContextLength), rmTokenizer.Special.Pad);
                output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["n"] = e.N, ["accuracy"] = e.Accuracy, ["reward_margin"] = e.RewardMargin, ["loss"] = e.Loss,
                }, Json.Compact));
                return 0;
            }
            Check.Positive(r.GetValue(maxNew), "--max-new-tokens");
            var rewardFunction = RewardSpec.Parse(r.GetValue(reward)!);
            var prompts = RewardChecks.RequireSolutions(Jsonl.ReadPrompts(r.GetValue(data)!, r.GetValue(skipInvalid), dataOptions), r.GetValue(skipInvalid), rewardFunction);
            InvalidRecords.Report(prompts.Skipped, errors);
            var (policy, tokenizer) = RunDirectory.LoadPolicy(r.GetValue(model)!, ChatKwargs(r.GetValue(kwargs)));
            policy.to(r.GetValue(device).Resolve()).ComputeIn(r.GetValue(dtype));
            if (r.GetValue(samples) is string samplesPath && Directory.Exists(samplesPath)) throw new PpoSharpException($"{samplesPath}: is a directory; --samples takes a file to write");
            var result = Evaluator.Evaluate(policy, tokenizer, prompts.Records, rewardFunction, r.GetValue(maxNew));
            (tokenizer as CharTokenizer)?.WarnUnknown(errors);
            if (r.GetValue(samples) is string path) Jsonl.Write(path, result.Samples.Select(s => new
            {
                prompt = s.Prompt, solution = s.Solutions, response = s.Response, reward = s.Reward, exact_match = s.ExactMatch,
            }));
            output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["n"] = result.N, ["reward_mean"] = result.RewardMean, ["exact_match"] = result.ExactMatch,
                ["response_length"] = result.ResponseLength, ["reward"] = rewardFunction.Name,
            }, Json.Compact));
            return 0;
        });
        return c;
    }

    /// <summary>--split and --set (the dataset keys) of the commands without a training config.</summary>
    private static (Option<string?> Split, Option<string[]> Set) DataOptionsFlags() => (TrainingOptions.SplitOption("--split", "--data", "train"), new Option<string[]>("--set")
    {
        Description = "a dataset key: prompt_column=NAME, solution_column=NAME, dataset_text_field=NAME, system_prompt=TEXT (repeatable)",
    });

    private static DataOptions DataOptionsOf(ParseResult r, Option<string?> split, Option<string[]> set, string command) =>
        (ConfigLoader.Load(new DataOptions(), null, r.GetValue(set) ?? [], o => o.Validate()) with { Split = r.GetValue(split), Command = command }).Validate();

    private static Command Inspect(TextWriter output)
    {
        var model = Required("--model", "a PpoSharp run or a Hugging Face model folder");
        var data = Required("--data", "chat records, prompts or preference pairs (JSON Lines)");
        var n = new Option<int>("--n") { Description = "records to show", DefaultValueFactory = _ => 3 };
        var json = new Option<bool>("--json") { Description = "one JSON object per record: text, ids, loss_mask" };
        var kwargs = ChatKwargsOption();
        var (split, set) = DataOptionsFlags();
        var c = new Command("inspect", "what the model sees: each record's format, rendered text, token ids and loss mask (trained text between « »)") { model, data, n, json, kwargs, split, set };
        c.SetAction(r =>
        {
            Check.Positive(r.GetValue(n), "--n");
            var tokenizer = RunDirectory.LoadTokenizer(r.GetValue(model)!, ChatKwargs(r.GetValue(kwargs)));
            foreach (var view in Inspection.Records(tokenizer, r.GetValue(data)!, r.GetValue(n), DataOptionsOf(r, split, set, "inspect")))
            {
                if (r.GetValue(json))
                {
                    output.WriteLine(JsonSerializer.Serialize(new { format = view.Format.ToString(), text = view.Text, ids = view.Ids, loss_mask = view.LossMask.Select(b => b ? 1 : 0) }, Json.Compact));
                    continue;
                }
                output.WriteLine($"{view.Source}: {view.Format}, {view.Ids.Count} tokens, {view.LossMask.Count(b => b)} trained");
                output.WriteLine(Inspection.Marked(tokenizer, view));
                output.WriteLine($"ids: {string.Join(' ', view.Ids)}");
                output.WriteLine();
            }
            return 0;
        });
        return c;
    }
}
