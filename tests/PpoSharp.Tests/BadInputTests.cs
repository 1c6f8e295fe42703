using System.Text.Json.Nodes;
using PpoSharp.Models.Hf;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// The bad-input corpus (BadInputs/): every case through the real command line, one assertion each on the message,
/// plus the shared checks: exit code 2, a single line on stderr, no stack trace, nothing on stdout, no --out written.
/// </summary>
public class BadInputTests
{
    private static string Corpus(string name) => Path.Combine(AppContext.BaseDirectory, "BadInputs") + Path.DirectorySeparatorChar + name;

    private static string Policy => Path.Combine(TestSupport.TrainedSortModel, "model");
    private static string Prompts => Path.Combine(TestSupport.TrainedSortModel, "data", "prompts.jsonl");

    /// <summary>Model directories spoiled in the ways the issue lists, made once from the trained test model.</summary>
    private static readonly Lazy<Dictionary<string, string>> Spoiled = new(() =>
    {
        var root = TestSupport.TempDir();
        string Copy(string name)
        {
            var dir = Path.Combine(root, name);
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Policy)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            return dir;
        }
        var pickle = Copy("pickle");
        File.WriteAllBytes(Path.Combine(pickle, RunDirectory.ModelFile), [0x80, 0x02, (byte)'c', (byte)'o', (byte)'s', 0, 0, 0, 0, 0, 0, 0]);
        var truncated = Copy("truncated");
        var bytes = File.ReadAllBytes(Path.Combine(truncated, RunDirectory.ModelFile));
        File.WriteAllBytes(Path.Combine(truncated, RunDirectory.ModelFile), bytes[..(bytes.Length / 2)]);
        var shapes = Copy("shapes");
        var config = Path.Combine(shapes, RunDirectory.ConfigFile);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"n_embd\": 64", "\"n_embd\": 32"));
        var noTokenizer = Copy("no-tokenizer");
        File.Delete(Path.Combine(noTokenizer, "tokenizer.json"));
        var badConfig = Copy("bad-config");
        File.WriteAllText(Path.Combine(badConfig, RunDirectory.ConfigFile), "{\"kind\": \"policy\"");
        // A checkpoint of a run stopped before its final model: the run folder has no config.json or tokenizer.json yet.
        var unfinished = Path.Combine(root, "unfinished", Checkpoints.Folder, "step-000200");
        Directory.CreateDirectory(unfinished);
        foreach (var f in Directory.GetFiles(Path.Combine(Policy, Checkpoints.Folder, "step-000200"))) File.Copy(f, Path.Combine(unfinished, Path.GetFileName(f)));
        return new() { ["pickle"] = pickle, ["truncated"] = truncated, ["shapes"] = shapes, ["no-tokenizer"] = noTokenizer, ["bad-config"] = badConfig, ["unfinished-checkpoint"] = unfinished };
    });

    /// <summary>The tiny Llama 3 folder spoiled in the ways real model folders go wrong, made once per test run.</summary>
    private static readonly Lazy<Dictionary<string, string>> SpoiledHf = new(() =>
    {
        var spoiled = new Dictionary<string, string> { ["clean"] = TestSupport.HfModel("tiny-llama3") };
        string Copy(string name, Action<string> spoil)
        {
            var dir = TestSupport.HfModel("tiny-llama3");
            spoil(dir);
            return spoiled[name] = dir;
        }
        void EditConfig(string dir, string file, Action<JsonObject> edit)
        {
            var path = Path.Combine(dir, file);
            var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            edit(json);
            File.WriteAllText(path, json.ToJsonString());
        }
        void Rewrite(string dir, Func<Dictionary<string, Tensor>, IEnumerable<KeyValuePair<string, Tensor>>> change, long maxShardBytes = Safetensors.DefaultMaxShardBytes)
        {
            var tensors = Safetensors.LoadFolder(dir);
            File.Delete(Path.Combine(dir, Safetensors.SingleFile));
            Safetensors.SaveFolder(dir, change(tensors).ToList(), maxShardBytes);
        }
        Copy("architecture", d => EditConfig(d, "config.json", c => c["architectures"] = new JsonArray("FalconForCausalLM")));
        Copy("no-config", d => File.Delete(Path.Combine(d, "config.json")));
        Copy("no-tokenizer", d => File.Delete(Path.Combine(d, "tokenizer.json")));
        Copy("pickle", d => File.Move(Path.Combine(d, Safetensors.SingleFile), Path.Combine(d, "pytorch_model.bin")));
        Copy("truncated-shard", d =>
        {
            Rewrite(d, t => t, maxShardBytes: 2_000_000);
            var shard = Directory.GetFiles(d, "model-00002-of-*.safetensors").Single();
            File.WriteAllBytes(shard, File.ReadAllBytes(shard)[..1000]);
        });
        Copy("missing-shard", d =>
        {
            Rewrite(d, t => t, maxShardBytes: 2_000_000);
            File.Delete(Directory.GetFiles(d, "model-00002-of-*.safetensors").Single());
        });
        Copy("shape", d => EditConfig(d, "config.json", c => c["intermediate_size"] = 128));
        Copy("dtype", d => Rewrite(d, t => t.Select(p => p.Key.EndsWith("layers.1.mlp.up_proj.weight", StringComparison.Ordinal) ? new(p.Key, p.Value.to(ScalarType.Int32)) : p)));
        Copy("missing-tensor", d => Rewrite(d, t => t.Where(p => !p.Key.EndsWith("layers.0.self_attn.k_proj.weight", StringComparison.Ordinal))));
        Copy("extra-tensor", d => Rewrite(d, t => t.Append(new("model.layers.0.self_attn.rotary.scale", ones(4)))));
        Copy("template", d => EditConfig(d, "tokenizer_config.json", c => c["chat_template"] = "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"));
        Copy("rope", d => EditConfig(d, "config.json", c => c["rope_scaling"] = new JsonObject { ["rope_type"] = "yarn", ["factor"] = 4.0 }));
        Copy("activation", d => EditConfig(d, "config.json", c => c["hidden_act"] = "gelu"));
        Copy("eos", d =>
        {
            foreach (var file in new[] { "config.json", "generation_config.json" }) EditConfig(d, file, c => c.Remove("eos_token_id"));
            EditConfig(d, "tokenizer_config.json", c => c.Remove("eos_token"));
        });
        return spoiled;
    });

    /// <summary>LoRA adapter folders on the trained test model, spoiled in the ways adapter folders go wrong, made once per test run.</summary>
    private static readonly Lazy<Dictionary<string, string>> SpoiledAdapters = new(() =>
    {
        var spoiled = new Dictionary<string, string>();
        var baseModel = RunDirectory.LoadPolicyModel(Policy);
        string Copy(string name, Action<string> spoil)
        {
            var dir = Path.Combine(TestSupport.TempDir(), name);
            PeftAdapter.Save(dir, Training.LoraModels.NewView(baseModel, new Models.LoraSettings(4, 8, 0, "")).Adapter!, Policy);
            File.Copy(Path.Combine(Policy, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
            spoil(dir);
            return spoiled[name] = dir;
        }
        void Edit(string dir, Action<JsonObject> edit)
        {
            var path = Path.Combine(dir, PeftAdapter.ConfigFile);
            var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            edit(json);
            File.WriteAllText(path, json.ToJsonString());
        }
        Copy("clean", _ => { });
        Copy("peft-type", d => Edit(d, c => c["peft_type"] = "PREFIX_TUNING"));
        Copy("hub-base", d => Edit(d, c => c["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M"));
        Copy("no-weights", d => File.Delete(Path.Combine(d, PeftAdapter.WeightsFile)));
        Copy("rank", d => Edit(d, c => c["r"] = 8));
        Copy("dora", d => Edit(d, c => c["use_dora"] = true));
        var other = Path.Combine(TestSupport.TempDir(), "other-base");
        Directory.CreateDirectory(other);
        foreach (var f in Directory.GetFiles(Path.Combine(TestSupport.FlawedSortModel, "model"))) File.Copy(f, Path.Combine(other, Path.GetFileName(f)));
        spoiled["other-base"] = other;
        return spoiled;
    });

    public static TheoryData<string, string[], string> Cases => new()
    {
        { "broken JSON line", ["sft", "--data", "@broken-json.jsonl", "--out", "{out}"], "broken-json.jsonl:2: invalid JSON" },
        { "content of the wrong type", ["sft", "--data", "@content-not-string.jsonl", "--out", "{out}"], "content-not-string.jsonl:1: 'messages[0].content' must be a string, not array" },
        { "unknown role", ["sft", "--data", "@unknown-role.jsonl", "--out", "{out}"], "unknown-role.jsonl:1: 'messages[0].role' is 'robot'; allowed: system, user, assistant" },
        { "empty content", ["sft", "--data", "@empty-content.jsonl", "--out", "{out}"], "empty-content.jsonl:1: 'messages[0].content' is empty" },
        { "record longer than the context", ["sft", "--data", "@huge-record.jsonl", "--out", "{out}"], "huge-record.jsonl:1: record is 10010 tokens, longer than context_length 64" },
        { "record that is not an object", ["sft", "--data", "@not-an-object.jsonl", "--out", "{out}"], "not-an-object.jsonl:1: a record must be a JSON object" },
        { "missing messages", ["sft", "--data", "@missing-messages.jsonl", "--out", "{out}"], "missing-messages.jsonl: prompt-only (standard) records (fields: prompt, response); sft takes language modelling" },
        { "messages not an array", ["sft", "--data", "@messages-not-array.jsonl", "--out", "{out}"], "messages-not-array.jsonl:1: 'messages' must be an array" },
        { "empty file", ["sft", "--data", "@empty.jsonl", "--out", "{out}"], "empty.jsonl: no records" },
        { "chat record without an answer", ["sft", "--data", "@prompt-only.jsonl", "--out", "{out}"], "prompt-only.jsonl: prompt-only (conversational) records (fields: messages); sft takes" },
        { "solution of the wrong type", ["ppo", "--data", "@solution-object.jsonl", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}"], "solution-object.jsonl:1: 'solution' must be a string or an array of strings" },
        { "solution group with a number", ["eval", "--model", "{policy}", "--data", "@solution-mixed-group.jsonl"], "solution-mixed-group.jsonl:1: 'solution' must be a string or an array of strings" },
        { "rule reward without solution", ["eval", "--model", "{policy}", "--data", "@prompt-only.jsonl", "--reward", "exact-match"], "prompt-only.jsonl:1: reward 'exact-match' needs a 'solution' field" },
        { "pair without rejected", ["rm", "--data", "@pair-missing-rejected.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-missing-rejected.jsonl:1: missing field 'rejected'" },
        { "identical chosen and rejected", ["rm", "--data", "@pair-identical.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-identical.jsonl:1: 'chosen' and 'rejected' are identical" },
        { "margin not a number", ["rm", "--data", "@pair-bad-margin.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-bad-margin.jsonl:1: 'margin' must be a finite number" },
        { "dpo: pair without chosen", ["dpo", "--data", "@pair-missing-chosen.jsonl", "--init", "{policy}", "--out", "{out}"], "pair-missing-chosen.jsonl:1: missing field 'chosen'" },
        { "dpo: label smoothing with the hinge loss", ["dpo", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{out}", "--set", "loss_type=hinge", "--set", "label_smoothing=0.1"], "label_smoothing applies to loss_type sigmoid and robust only, not hinge; set it to 0" },
        { "config file truncated", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--config", "@config-truncated.json"], "config-truncated.json: invalid JSON" },
        { "config file with unknown key", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--config", "@config-unknown-key.json"], "config-unknown-key.json: unknown key 'learnig_rate' (did you mean 'learning_rate'?); allowed: iterations" },
        { "config enum value", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--config", "@config-bad-enum.json"], "config-bad-enum.json: 'critic' expects one of separate, shared" },
        { "config not an object", ["sft", "--data", "{prompts}", "--out", "{out}", "--config", "@config-not-object.json"], "config-not-object.json: a config file must hold one JSON object" },
        { "unknown --set key", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "clip_range=0.2"], "--set clip_range=0.2: unknown key 'clip_range'" },
        { "cliprange <= 0", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "cliprange=0"], "cliprange must be > 0 (got 0)" },
        { "unknown --gold reward", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--gold", "edit", "--out", "{out}"], "--gold: unknown reward 'edit'" },
        { "lam > 1", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "lam=1.5"], "lam must be in [0, 1] (got 1.5)" },
        { "minibatches not dividing the batch", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "num_mini_batches=5"], "num_mini_batches (5) must divide batch_size (64)" },
        { "value of the wrong type", ["sft", "--data", "{prompts}", "--out", "{out}", "--set", "steps=many"], "--set steps=many: 'steps' expects an integer" },
        { "missing model directory", ["ppo", "--data", "{prompts}", "--init", "/nonexistent/sft", "--reward", "edit-distance", "--out", "{out}"], "/nonexistent/sft: model directory not found" },
        { "directory that is no model", ["generate", "--model", "{data}", "--prompt", "sort: ba"], "config.json: missing (a model directory needs config.json)" },
        { "model file that is a pickle", ["generate", "--model", "{spoiled:pickle}", "--prompt", "sort: ba"], "model.safetensors: not a safetensors file" },
        { "truncated model file", ["generate", "--model", "{spoiled:truncated}", "--prompt", "sort: ba"], "model.safetensors: truncated (" },
        { "model shapes differ from config", ["generate", "--model", "{spoiled:shapes}", "--prompt", "sort: ba"], "config.json implies [" },
        { "missing tokenizer", ["generate", "--model", "{spoiled:no-tokenizer}", "--prompt", "sort: ba"], "tokenizer.json: missing" },
        { "corrupt run config", ["eval", "--model", "{spoiled:bad-config}", "--data", "{prompts}"], "config.json: invalid JSON" },
        { "reward model where a policy is needed", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "model:{policy}", "--out", "{out}"], "holds a policy, but a reward model is needed here" },
        { "unknown reward", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "bleu", "--out", "{out}"], "--reward: unknown reward 'bleu'" },
        { "HF: unknown architecture", ["generate", "--model", "{hf:architecture}", "--prompt", "hi"], "architecture 'FalconForCausalLM' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GPT2LMHeadModel" },
        { "HF: missing config.json", ["sft", "--init", "{hf:no-config}", "--data", "@hf-chat.jsonl", "--out", "{out}"], "config.json: missing (a model directory needs config.json)" },
        { "HF: missing tokenizer", ["generate", "--model", "{hf:no-tokenizer}", "--prompt", "hi"], "tokenizer.json: missing" },
        { "HF: pickle weights", ["generate", "--model", "{hf:pickle}", "--prompt", "hi"], "pytorch_model.bin: pickle weights are not loaded (they can run code); convert them with" },
        { "HF: truncated shard", ["generate", "--model", "{hf:truncated-shard}", "--prompt", "hi"], "model-00002-of-" },
        { "HF: missing shard", ["sft", "--init", "{hf:missing-shard}", "--data", "@hf-chat.jsonl", "--out", "{out}"], "model.safetensors.index.json: shard 'model-00002-of-" },
        { "HF: shape mismatch", ["generate", "--model", "{hf:shape}", "--prompt", "hi"], "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [96x32], config.json implies [128x32]" },
        { "HF: integer weights", ["generate", "--model", "{hf:dtype}", "--prompt", "hi"], "tensor 'model.layers.1.mlp.up_proj.weight' is Int32, a weight must be floating point" },
        { "HF: missing tensor", ["generate", "--model", "{hf:missing-tensor}", "--prompt", "hi"], "tensor 'model.layers.0.self_attn.k_proj.weight' is missing from the weights" },
        { "HF: unexpected tensor", ["generate", "--model", "{hf:extra-tensor}", "--prompt", "hi"], "unexpected tensor 'model.layers.0.self_attn.rotary.scale'" },
        { "HF: chat template error", ["sft", "--init", "{hf:template}", "--data", "@hf-chat.jsonl", "--out", "{out}"], "hf-chat.jsonl:1: chat template: System role not supported" },
        { "HF: prompt longer than the context", ["ppo", "--init", "{hf:clean}", "--data", "@hf-long-prompt.jsonl", "--reward", "exact-match", "--out", "{out}"], "hf-long-prompt.jsonl:2: prompt is " },
        { "HF: generate prompt too long", ["generate", "--model", "{hf:clean}", "--prompt-ids", string.Join(",", Enumerable.Repeat(9, 130))], "the prompt is 130 tokens, leaving no room to respond within context_length 128" },
        { "HF: unsupported rope type", ["generate", "--model", "{hf:rope}", "--prompt", "hi"], "rope type 'yarn' is not supported (supported: default, linear, llama3)" },
        { "HF: unsupported activation", ["generate", "--model", "{hf:activation}", "--prompt", "hi"], "hidden_act 'gelu' is not supported for LlamaForCausalLM" },
        { "HF: no end-of-sequence id anywhere", ["generate", "--model", "{hf:eos}", "--prompt", "hi"], ": no EOS token (none of generation_config.json eos_token_id, config.json eos_token_id, tokenizer_config.json eos_token)" },
        { "HF: prompt id outside the vocabulary", ["generate", "--model", "{hf:clean}", "--prompt-ids", "1,999999"], "prompt id 999999 is outside the vocabulary (0 .. 128255)" },
        { "HF: prompt ids not integers", ["generate", "--model", "{hf:clean}", "--prompt-ids", "1,two,3"], "--prompt-ids: 'two' is not an integer" },
        { "HF: both prompt forms", ["generate", "--model", "{hf:clean}", "--prompt", "hi", "--prompt-ids", "1"], "give either --prompt TEXT or --prompt-ids 1,2,3" },
        { "HF: empty prompt", ["generate", "--model", "{hf:clean}", "--prompt", ""], "--prompt is empty" },
        { "CUDA asked for, CPU build", ["generate", "--model", "{hf:clean}", "--prompt", "hi", "--device", "cuda"], "device 'cuda' is not available: this build references TorchSharp-cpu" },
        { "CUDA asked for in a training config", ["sft", "--init", "{hf:clean}", "--data", "@hf-chat.jsonl", "--out", "{out}", "--set", "device=cuda"], "device 'cuda' is not available" },
        { "unknown device key value", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "device=tpu"], "--set device=tpu: 'device' expects one of cpu, cuda" },
        { "LoRA: rank below 0", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "lora_r=-1"], "lora_r must be >= 0 (got -1; 0 trains every weight)" },
        { "LoRA: target the architecture lacks", ["grpo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "lora_r=4", "--set", "lora_target_modules=q_proj"], "lora_target_modules: 'q_proj' names no linear layer of GPT2LMHeadModel (its names: c_attn, c_proj, c_fc, or all-linear)" },
        { "LoRA: a new model", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "lora_r=4"], "lora_r: LoRA adapts a trained model; give --init" },
        { "LoRA: adapter of another kind", ["generate", "--model", "{adapter:peft-type}", "--prompt", "sort: ba"], "adapter_config.json: peft_type 'PREFIX_TUNING' is not supported (only LORA)" },
        { "LoRA: base not a folder here", ["ppo", "--data", "{prompts}", "--init", "{adapter:hub-base}", "--reward", "edit-distance", "--out", "{out}"], "base_model_name_or_path 'HuggingFaceTB/SmolLM2-135M' is not a model folder here; pass --base DIR" },
        { "LoRA: adapter weights missing", ["eval", "--model", "{adapter:no-weights}", "--data", "{prompts}"], "adapter_model.safetensors: missing (an adapter folder needs its weights)" },
        { "LoRA: rank differs from the weights", ["generate", "--model", "{adapter:rank}", "--prompt", "sort: ba"], "lora_A.weight' has shape [4x64], the base implies [8x64]" },
        { "LoRA: DoRA", ["sft", "--init", "{adapter:dora}", "--data", "{data}/sft.jsonl", "--out", "{out}"], "adapter_config.json: use_dora true is not supported" },
        { "LoRA: --base of another model", ["generate", "--model", "{adapter:clean}", "--base", "{adapter:other-base}", "--prompt", "sort: ba"], "this adapter was trained on another base (weights sha256 " },
        { "LoRA: --base without an adapter", ["generate", "--model", "{policy}", "--base", "{policy}", "--prompt", "sort: ba"], "--base goes with an --init or --model that is one" },
        { "LoRA: export of full weights", ["export", "--model", "{policy}", "--merge", "--out", "{out}"], "holds full weights (no adapter_config.json), which are already a Hugging Face folder; export takes a LoRA run" },
        { "LoRA: export into a non-empty folder", ["export", "--model", "{adapter:clean}", "--out", "{data}"], "data: output directory is not empty" },
        { "rm: an ensemble of none", ["rm", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{out}", "--ensemble", "0"], "'ensemble' is out of range: expected an integer from 1 to 64 (got 0)" },
        { "ppo: reward-model accuracy floor out of range", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "min_reward_model_accuracy=1.5"], "min_reward_model_accuracy must be in [0, 1] (got 1.5)" },
        { "data: unknown pair kind", ["data", "--out", "{out}", "--pairs", "two-letter"], "--pairs: 'two-letter' is not a kind (mixed, one-letter)" },
        // TRL's dataset formats: a format the command does not take, column mapping, splits, records of each format gone wrong
        { "TRL: preference given to sft", ["sft", "--data", "@trl-preference.jsonl", "--out", "{out}"], "trl-preference.jsonl: preference (conversational) records (fields: prompt, chosen, rejected); sft takes language modelling {\"text\"} or {\"messages\"} or prompt-completion {\"prompt\", \"completion\"}" },
        { "TRL: prompt-completion given to grpo", ["grpo", "--data", "@trl-prompt-completion.jsonl", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}"], "trl-prompt-completion.jsonl: prompt-completion (standard) records (fields: prompt, completion); grpo takes prompt-only {\"prompt\"} or {\"messages\", \"solution\"}" },
        { "TRL: language modelling given to rm", ["rm", "--data", "@trl-text.jsonl", "--init", "{policy}", "--out", "{out}"], "trl-text.jsonl: language modelling (standard) records (fields: text); rm takes preference {\"prompt\", \"chosen\", \"rejected\"} or preference with an implicit prompt {\"chosen\", \"rejected\"}" },
        { "TRL: prompt-only given to dpo", ["dpo", "--data", "{prompts}", "--init", "{policy}", "--out", "{out}"], "prompts.jsonl: prompt-only (conversational) records (fields: messages, solution); dpo takes preference" },
        { "TRL: unpaired preference given to eval", ["eval", "--model", "{policy}", "--data", "@trl-unpaired.jsonl"], "trl-unpaired.jsonl: unpaired preference (standard) records (fields: prompt, completion, label); eval takes prompt-only" },
        { "TRL: no format (GSM8K's own names)", ["ppo", "--data", "@gsm8k-names.jsonl", "--init", "{policy}", "--reward", "math", "--out", "{out}"], "gsm8k-names.jsonl: no dataset format found (fields: question, answer); ppo takes prompt-only {\"prompt\"} or {\"messages\", \"solution\"} (other column names: --set prompt_column=NAME)" },
        { "column mapping: a column that does not exist", ["grpo", "--data", "@gsm8k-names.jsonl", "--init", "{policy}", "--reward", "math", "--out", "{out}", "--set", "prompt_column=questoin"], "gsm8k-names.jsonl:1: prompt_column 'questoin' is not a column of this record (its columns: question, answer)" },
        { "column mapping: solution column that does not exist", ["eval", "--model", "{policy}", "--data", "@gsm8k-names.jsonl", "--reward", "math", "--set", "prompt_column=question", "--set", "solution_column=answers"], "gsm8k-names.jsonl:1: solution_column 'answers' is not a column of this record (its columns: question, answer)" },
        { "column mapping: unknown dataset key in eval", ["eval", "--model", "{policy}", "--data", "@gsm8k-names.jsonl", "--set", "prompt_colum=question"], "--set prompt_colum=question: unknown key 'prompt_colum' (did you mean 'prompt_column'?)" },
        { "split: missing from the dataset folder", ["eval", "--model", "{policy}", "--data", "{parquet}/gsm8k", "--reward", "math", "--split", "validation", "--set", "prompt_column=question", "--set", "solution_column=answer"], "gsm8k: no 'validation' split; found: test, train (choose one with --split)" },
        { "split: given with a file", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--split", "test"], "sft.jsonl: --split test chooses the files of a dataset folder, and this is one file" },
        { "split: not a split name", ["grpo", "--data", "{parquet}/gsm8k", "--init", "{policy}", "--reward", "math", "--out", "{out}", "--split", "dev"], "--split: 'dev' is not a split (allowed: train, test, validation)" },
        { "split: --eval folder without the split", ["grpo", "--data", "{parquet}/gsm8k", "--init", "{policy}", "--reward", "math", "--out", "{out}", "--set", "prompt_column=question", "--set", "solution_column=answer", "--eval", "{parquet}/gsm8k", "--eval-split", "validation"], "gsm8k: no 'validation' split; found: test, train" },
        { "implicit prompt: nothing shared", ["dpo", "--data", "@implicit-no-prompt.jsonl", "--init", "{policy}", "--out", "{out}"], "implicit-no-prompt.jsonl:1: 'chosen' and 'rejected' share no prompt" },
        { "conversational chosen of two messages", ["rm", "--data", "@chosen-two-messages.jsonl", "--init", "{policy}", "--out", "{out}"], "chosen-two-messages.jsonl:1: 'chosen' must hold one assistant message (got 2 message(s), roles: assistant, assistant)" },
        { "language-modelling text empty", ["sft", "--data", "@text-empty.jsonl", "--out", "{out}"], "text-empty.jsonl:1: 'text' is empty" },
        { "a field given twice", ["eval", "--model", "{policy}", "--data", "@duplicate-field.jsonl"], "duplicate-field.jsonl:1: a field is given twice" },
        { "Parquet: truncated, through grpo", ["grpo", "--data", "@truncated.parquet", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}"], "truncated.parquet: not a readable Parquet file" },
        { "Parquet: wrong column type, through grpo", ["grpo", "--data", "{parquet}/wrong-types.parquet", "--init", "{policy}", "--reward", "math", "--out", "{out}"], "wrong-types.parquet: row 1: 'solution' must be a string or an array of strings" },
        { "Parquet: not Parquet, through sft", ["sft", "--data", "@not-parquet.parquet", "--out", "{out}"], "not-parquet.parquet: not a readable Parquet file" },
        { "a label the verifier cannot read", ["grpo", "--data", "@label-unreadable.jsonl", "--init", "{policy}", "--reward", "math", "--out", "{out}", "--set", "solution_column=answer"], "label-unreadable.jsonl:1: reward 'math' cannot read a final answer in label 'four'" },
        { "misspelt command", ["dmeo"], "unknown command 'dmeo' (did you mean 'demo'?" },
        { "directory given as --data", ["eval", "--model", "{policy}", "--data", "{data}"], "data: a directory without 'train' split files (expected data/train-00000-of-00001.parquet or train.jsonl); --data takes a file or a dataset folder" },
        { "file given as --model", ["generate", "--model", "{prompts}", "--prompt", "sort: ba"], "prompts.jsonl: is a file; a model is a directory" },
        { "top_p of 0", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "top_p=0"], "top_p must be in (0, 1] (got 0)" },
        { "--top-p of 0", ["generate", "--model", "{policy}", "--prompt", "sort: ba", "--top-p", "0"], "--top-p must be in (0, 1] (got 0)" },
        { "data into a non-empty directory", ["data", "--out", "{data}"], "data: output directory is not empty (use --force to write into it, or another --out)" },
        { "prompt without the solution a rule needs, line 2", ["ppo", "--data", "@solution-missing-line2.jsonl", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}"], "solution-missing-line2.jsonl:2: reward 'edit-distance' needs a 'solution' field" },
        { "preference pairs given as PPO prompts", ["ppo", "--data", "@pairs-as-prompts.jsonl", "--init", "{policy}", "--reward", "exact-match:0.5,repetition", "--out", "{out}"], "pairs-as-prompts.jsonl: preference (conversational) records (fields: messages, chosen, rejected); ppo takes prompt-only" },
        { "inspect: broken JSON line", ["inspect", "--model", "{policy}", "--data", "@broken-json.jsonl"], "broken-json.jsonl:2: invalid JSON" },
        { "inspect: no records asked for", ["inspect", "--model", "{policy}", "--data", "{prompts}", "--n", "0"], "--n must be > 0 (got 0)" },
        { "inspect: template error names the record", ["inspect", "--model", "{hf:template}", "--data", "@hf-chat.jsonl"], "hf-chat.jsonl:1: chat template: System role not supported" },
        { "no threads", ["generate", "--model", "{policy}", "--prompt", "sort: ba", "--threads", "0"], "--threads must be at least 1 (got 0)" },
        { "--out is the --init folder, with --force", ["sft", "--init", "{policy}", "--data", "{data}/sft.jsonl", "--out", "{policy}", "--force"], "is the --init folder" },
        { "--out inside the --init folder", ["sft", "--init", "{policy}", "--data", "{data}/sft.jsonl", "--out", "{policy}/run"], "/run is inside the --init folder" },
        { "--out is a model: reward folder", ["grpo", "--init", "{policy}", "--data", "{prompts}", "--reward", "model:{out}", "--out", "{out}", "--force"], "is the --reward model: folder" },
        { "--out is the --critic-init folder", ["ppo", "--init", "{policy}", "--data", "{prompts}", "--reward", "edit-distance", "--critic-init", "{out}", "--out", "{out}", "--force"], "is the --critic-init folder" },
        { "--out holds the --data file, with --force", ["sft", "--data", "{data}/sft.jsonl", "--out", "{data}", "--force"], "holds the --data input" },
        { "dpo: --out holds its inputs", ["dpo", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{policy}/..", "--force"], "/.. holds the --data input " },
        { "export into its own adapter folder", ["export", "--model", "{adapter:clean}", "--out", "{adapter:clean}", "--force"], "is the --model folder" },
        { "steps out of int's range", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "steps=99999999999"], "--set steps=99999999999: 'steps' is out of range: expected an integer from 1 to 100000000 (got 99999999999)" },
        { "batch_size out of range", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "batch_size=100000000"], "'batch_size' is out of range: expected an integer from 1 to 65536 (got 100000000)" },
        { "grpo: iterations out of range", ["grpo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "iterations=2147483648"], "'iterations' is out of range: expected an integer from 1 to 100000000 (got 2147483648)" },
        { "dpo: batch larger than the data", ["dpo", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{out}", "--set", "batch_size=60000"], "batch_size 60000 is larger than the data: " },
        { "ppo: batch larger than the prompts", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "batch_size=65536", "--set", "num_mini_batches=1"], "batch_size 65536 is larger than the data: " },
        { "grpo: TRL's gradient accumulation", ["grpo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "gradient_accumulation_steps=4"], "--set gradient_accumulation_steps=4: TRL's 'gradient_accumulation_steps' is not supported: here (ppo, grpo) each rollout round" },
        { "ppo: TRL's epochs", ["ppo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "num_train_epochs=2"], "TRL's 'num_train_epochs' is not supported: here (ppo, grpo) iterations counts rollout rounds" },
        { "epochs and steps both", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "num_train_epochs=2", "--set", "max_steps=10"], "--set num_train_epochs=2: num_train_epochs sets the number of steps, and --set max_steps=10 sets it too: give one of them" },
        { "epochs of 0", ["dpo", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{out}", "--set", "num_train_epochs=0"], "num_train_epochs must be > 0 (got 0)" },
        { "accumulation out of range", ["rm", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{out}", "--set", "gradient_accumulation_steps=0"], "'gradient_accumulation_steps' is out of range: expected an integer from 1 to 65536 (got 0)" },
        { "TRL alias with a bad value", ["dpo", "--data", "{data}/preferences.jsonl", "--init", "{policy}", "--out", "{out}", "--set", "learning_rate=fast"], "--set learning_rate=fast: 'lr' expects a number" },
        { "TRL alias out of range", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "max_steps=0"], "steps must be > 0 (got 0)" },
        { "TRL batch name in grpo", ["grpo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "per_device_train_batch_size=8"], "unknown key 'per_device_train_batch_size': TRL counts completions with it; here iterations counts rollout rounds and batch_size prompts per round" },
        { "misspelt key", ["grpo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "num_generation=4"], "unknown key 'num_generation' (did you mean 'num_generations'" },
        { "YAML config: syntax error", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--config", "@config-broken.yaml"], "config-broken.yaml:3: invalid YAML (" },
        { "YAML config: unknown key", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--config", "@config-unknown-key.yaml"], "config-unknown-key.yaml: unknown key 'lerning_rate' (did you mean 'learning_rate'?)" },
        { "YAML config: quoted number", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--config", "@config-quoted-number.yaml"], "config-quoted-number.yaml: 'steps' expects an integer" },
        { "YAML config: a list at the top", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--config", "@config-list.yaml"], "config-list.yaml: a config file must hold one mapping of keys to values" },
        { "YAML config: key twice", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--config", "@config-duplicate.yaml"], "config-duplicate.yaml:3: invalid YAML (Duplicate key" },
        { "grpo: completions longer than the context", ["grpo", "--data", "{prompts}", "--init", "{policy}", "--reward", "edit-distance", "--out", "{out}", "--set", "max_completion_length=1000000"], "max_completion_length 1000000 does not fit in the model's context_length 32, which prompt and completion share (set at most 31)" },
        { "max_length longer than the context", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "max_length=100"], "max_length 100 is longer than the model's context_length 64" },
        { "warmup_ratio above 1", ["sft", "--data", "{data}/sft.jsonl", "--out", "{out}", "--set", "warmup_ratio=1.5"], "warmup_ratio must be in [0, 1] (got 1.5)" },
        { "checkpoint of an unfinished run as a model", ["generate", "--model", "{spoiled:unfinished-checkpoint}", "--prompt", "sort: ba"], "config.json: missing (a model directory needs config.json); it is a training checkpoint of the run " },
        { "unknown --dtype", ["generate", "--model", "{hf:clean}", "--prompt", "hi", "--dtype", "fp8"], "Cannot parse argument 'fp8' for option '--dtype'" },
    };

    [Theory, MemberData(nameof(Cases))]
    public void BadInput_OneLineNamingTheProblem_ExitCode2_NothingWritten(string name, string[] args, string message)
    {
        var outDir = Path.Combine(TestSupport.TempDir(), "out");
        var resolved = args.Select(a => a
            .Replace("{out}", outDir).Replace("{policy}", Policy).Replace("{prompts}", Prompts)
            .Replace("{data}", Path.Combine(TestSupport.TrainedSortModel, "data")).Replace("{parquet}", Path.Combine(AppContext.BaseDirectory, "ParquetData"))
            .Replace("@", Corpus(""))).Select(a => a.StartsWith("{spoiled:") ? Spoiled.Value[a[9..^1]] : a.StartsWith("{hf:") ? SpoiledHf.Value[a[4..^1]]
                : a.StartsWith("{adapter:") ? SpoiledAdapters.Value[a[9..^1]] : a).ToArray();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = Cli.Cli.Run(resolved, stdout, stderr);
        var errors = stderr.ToString();
        Assert.True(code == 2, $"{name}: exit {code}: {errors}");
        Assert.True(errors.Contains(message, StringComparison.Ordinal), $"{name}: expected '{message}' in: {errors}");
        Assert.Single(errors.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", errors);
        Assert.Equal("", stdout.ToString());
        Assert.False(Directory.Exists(outDir), $"{name}: {outDir} was written");
    }

    [Fact]
    public void ExistingRunDirectory_IsNeverOverwrittenWithoutResumeOrForce()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "metrics.jsonl"), "{\"step\":1}\n");
        var before = Directory.GetFiles(dir).ToDictionary(f => f, File.ReadAllText);
        foreach (var args in new[]
                 {
                     new[] { "sft", "--data", Path.Combine(TestSupport.TrainedSortModel, "data", "sft.jsonl"), "--out", dir, "--set", "steps=1" },
                     new[] { "ppo", "--data", Prompts, "--init", Policy, "--reward", "edit-distance", "--out", dir, "--set", "iterations=1" },
                     new[] { "rm", "--data", Path.Combine(TestSupport.TrainedSortModel, "data", "preferences.jsonl"), "--init", Policy, "--out", dir, "--set", "steps=1" },
                     new[] { "dpo", "--data", Path.Combine(TestSupport.TrainedSortModel, "data", "preferences.jsonl"), "--init", Policy, "--out", dir, "--set", "steps=1" },
                 })
        {
            var stderr = new StringWriter();
            Assert.Equal(2, Cli.Cli.Run(args, new StringWriter(), stderr));
            Assert.Contains("output directory is not empty (use --resume to continue it, --force to start over", stderr.ToString());
        }
        Assert.Equal(before, Directory.GetFiles(dir).ToDictionary(f => f, File.ReadAllText));
    }
}
