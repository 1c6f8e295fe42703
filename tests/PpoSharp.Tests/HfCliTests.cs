using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Models.Hf;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// The whole pipeline through the command line on a Hugging Face folder (tiny-llama3: bf16 weights, tied head, the real
/// Llama 3 tokenizer and chat template): generate --json reproduces the reference, inspect shows assistant-only loss
/// masks, and sft -> rm -> ppo each write a folder that loads again as an HF folder of the same architecture and dtype.
/// </summary>
public class HfCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    private static readonly Lazy<string> Data = new(() =>
    {
        var dir = TestSupport.TempDir();
        var words = new[] { "cab", "dog", "zebra", "moon", "tree", "lamp" };
        TestSupport.WriteLines(dir, "chat.jsonl", words.Select(w =>
            $$"""{"messages":[{"role":"system","content":"Sort letters."},{"role":"user","content":"sort: {{w}}"},{"role":"assistant","content":"{{string.Concat(w.Order())}}"}]}""").ToArray());
        TestSupport.WriteLines(dir, "prompts.jsonl", words.Select(w => $$"""{"messages":[{"role":"user","content":"sort: {{w}}"}],"solution":"{{string.Concat(w.Order())}}"}""").ToArray());
        TestSupport.WriteLines(dir, "prefs.jsonl", words.Select(w =>
            $$"""{"messages":[{"role":"user","content":"sort: {{w}}"}],"chosen":"{{string.Concat(w.Order())}}","rejected":"{{w}}"}""").ToArray());
        return dir;
    });

    [Theory]
    [InlineData("tiny-llama3")]
    [InlineData("tiny-gpt2")]
    public void GenerateJson_PromptIds_ReproducesReferenceGreedyIdsAndLogprobs(string name)
    {
        var model = TestSupport.HfModel(name);
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "expected.json")))!;
        var promptIds = expected["greedy"]!["prompt_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var newIds = expected["greedy"]!["new_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var (code, output, err) = Run("generate", "--model", model, "--prompt-ids", string.Join(",", promptIds), "--json", "--max-new-tokens", "16", "--greedy");
        Assert.True(code == 0, err);
        var result = JsonNode.Parse(output)!;
        Assert.Equal(promptIds, result["prompt_ids"]!.AsArray().Select(x => x!.GetValue<int>()));
        var ids = result["ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var eos = RunDirectory.LoadTokenizer(model).Special.Eos;
        Assert.Equal(newIds.TakeWhile(id => !eos.Contains(id)), ids);                       // generation stops at any EOS id
        Assert.Equal(16, ids.Length);

        // log p of each new id under the model: the log-softmax of a plain forward over prompt + continuation, whose
        // logits match the reference (HfModelTests); the first is also the reference's last prompt position.
        var logprobs = result["logprobs"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        var (policy, _) = RunDirectory.LoadPolicy(model);
        var all = promptIds.Concat(ids).Select(i => (long)i).ToArray();
        using var _ = no_grad();
        var logp = policy.forward(tensor(all, [1, all.Length]))[0].log_softmax(-1);           // (T, V)
        for (int k = 0; k < ids.Length; k++) Assert.Equal(logp[promptIds.Length - 1 + k, ids[k]].item<float>(), logprobs[k], 1e-4);
        var last = expected["sequences"]![0]!["positions"]!.AsArray()[^1]!;
        Assert.Equal(last["argmax"]!.GetValue<int>(), ids[0]);
    }

    [Fact]
    public void Inspect_ChatRecords_MasksOnlyAssistantTurns()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var (code, output, err) = Run("inspect", "--model", model, "--data", Path.Combine(Data.Value, "chat.jsonl"), "--n", "2", "--json");
        Assert.True(code == 0, err);
        var lines = output.Trim().Split('\n');
        Assert.Equal(2, lines.Length);
        var tokenizer = RunDirectory.LoadTokenizer(model);
        foreach (var (line, word) in lines.Zip(new[] { "cab", "dog" }))
        {
            var o = JsonNode.Parse(line)!;
            var ids = o["ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
            var mask = o["loss_mask"]!.AsArray().Select(x => x!.GetValue<int>() == 1).ToArray();
            Assert.StartsWith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSort letters.<|eot_id|>", o["text"]!.GetValue<string>());
            var trained = tokenizer.Decode(ids.Where((_, i) => mask[i]), skipSpecial: false);
            Assert.StartsWith(string.Concat(word.Order()) + "<|eot_id|>", trained);
            Assert.DoesNotContain("sort:", trained);
            Assert.DoesNotContain("Sort letters", trained);
        }
    }

    [Fact]
    public void SftRmPpo_OnHfFolder_EachRunIsAnHfFolderOfTheSameArchitectureAndDtype()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var root = TestSupport.TempDir();
        string sft = Path.Combine(root, "sft"), rm = Path.Combine(root, "rm"), ppo = Path.Combine(root, "ppo");
        Assert.Equal(0, Run("sft", "--init", model, "--data", Path.Combine(Data.Value, "chat.jsonl"), "--out", sft, "--set", "steps=3", "--set", "batch_size=4", "--set", "eval_fraction=0").Code);
        Assert.Equal(0, Run("rm", "--init", sft, "--data", Path.Combine(Data.Value, "prefs.jsonl"), "--out", rm, "--set", "steps=3", "--set", "batch_size=4", "--set", "eval_fraction=0").Code);
        var (code, _, err) = Run("ppo", "--init", sft, "--reward", $"model:{rm}", "--data", Path.Combine(Data.Value, "prompts.jsonl"), "--out", ppo,
            "--set", "iterations=2", "--set", "batch_size=4", "--set", "num_mini_batches=2", "--set", "response_length=6");
        Assert.True(code == 0, err);

        var baseNames = Safetensors.ReadHeader(Path.Combine(model, "model.safetensors")).Select(e => e.Name).Order().ToList();
        foreach (var (dir, arch, extra) in new[] { (sft, "LlamaForCausalLM", ""), (ppo, "LlamaForCausalLM", ""), (rm, "LlamaForSequenceClassification", "score.weight"), (Path.Combine(ppo, "critic"), "LlamaForSequenceClassification", "score.weight") })
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
            Assert.Equal(arch, config["architectures"]![0]!.GetValue<string>());
            Assert.Equal("bfloat16", config["torch_dtype"]!.GetValue<string>());
            var header = Safetensors.ReadHeader(Path.Combine(dir, "model.safetensors"));
            Assert.Equal(baseNames.Concat(extra == "" ? [] : [extra]).Order(), header.Select(e => e.Name).Order());
            Assert.All(header, e => Assert.Equal("BF16", e.Dtype));
            Assert.True(File.Exists(Path.Combine(dir, "tokenizer.json")) && File.Exists(Path.Combine(dir, "tokenizer_config.json")), dir);
            Assert.Equal(HfCheckpoint.Read(dir).Spec, HfCheckpoint.Read(model).Spec);
        }
        var rmConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(rm, "config.json")))!;
        Assert.Equal(1, rmConfig["num_labels"]!.GetValue<int>());
        // transformers reads a reward at the last token that is not pad_token_id: not an EOS id, so that it is the same token
        // PpoSharp reads (the end of turn), and the saved tokenizer pads with it too.
        int pad = rmConfig["pad_token_id"]!.GetValue<int>();
        Assert.DoesNotContain(pad, RunDirectory.LoadTokenizer(model).Special.Eos);
        Assert.Equal(pad, RunDirectory.LoadTokenizer(rm).Special.Pad);
        Assert.Equal(File.ReadAllText(Path.Combine(model, "generation_config.json")), File.ReadAllText(Path.Combine(ppo, "generation_config.json")));
        var (genCode, text, genErr) = Run("generate", "--model", ppo, "--prompt", "sort: cab", "--max-new-tokens", "4");
        Assert.True(genCode == 0, genErr);
    }

    [Fact]
    public void SftResume_OnHfFolder_GivesTheSameMetricsAndModelAsAnUninterruptedRun()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var root = TestSupport.TempDir();
        string whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed"), data = Path.Combine(Data.Value, "chat.jsonl");
        string[] Sft(string dir, int steps, params string[] more) =>
            ["sft", "--init", model, "--data", data, "--out", dir, "--set", $"steps={steps}", "--set", "batch_size=4", "--set", "checkpoint_every=2", "--set", "eval_fraction=0", .. more];
        Assert.Equal(0, Run(Sft(whole, 4)).Code);
        Assert.Equal(0, Run(Sft(resumed, 2)).Code);
        Assert.Equal(0, Run(Sft(resumed, 4, "--resume")).Code);
        double[] Losses(string dir) => MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName)).Select(r => r["loss"].GetDouble()).ToArray();
        Assert.Equal(4, Losses(resumed).Length);
        Assert.Equal(Losses(whole), Losses(resumed));
        Assert.Equal(File.ReadAllBytes(Path.Combine(whole, "model.safetensors")), File.ReadAllBytes(Path.Combine(resumed, "model.safetensors")));
    }

    [Fact]
    public void ChatTemplateKwargs_ReachTheTemplate_InInspectAndGenerate()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var configPath = Path.Combine(model, "tokenizer_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["chat_template"] = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}{{ mood | default('calm') }}:{% endif %}";
        File.WriteAllText(configPath, config.ToJsonString());
        var prompts = Path.Combine(Data.Value, "prompts.jsonl");
        Assert.EndsWith("sort: cabcalm:", JsonNode.Parse(Run("inspect", "--model", model, "--data", prompts, "--n", "1", "--json").Out)!["text"]!.GetValue<string>());
        var (code, output, err) = Run("inspect", "--model", model, "--data", prompts, "--n", "1", "--json", "--chat-template-kwargs", """{"mood": "cheerful"}""");
        Assert.True(code == 0, err);
        Assert.EndsWith("sort: cabcheerful:", JsonNode.Parse(output)!["text"]!.GetValue<string>());
        var bad = Run("generate", "--model", model, "--prompt", "hi", "--chat-template-kwargs", "[1]");
        Assert.Equal((2, "error: --chat-template-kwargs must be a JSON object, e.g. {\"enable_thinking\": false}"), (bad.Code, bad.Err.Trim()));
    }
}
