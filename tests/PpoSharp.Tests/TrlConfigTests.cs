using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Models;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>Issue 21, sections 2 and 3: what a TRL user types (aliases, YAML configs) and the LoRA learning-rate default.</summary>
public class TrlConfigTests
{
    private static SftConfig Load(string? file, params string[] sets) => ConfigLoader.Load(new SftConfig(), file, sets, c => c.Validate());

    [Fact]
    public void Load_TrlNames_SetTheSameKeysAsPpoSharpNames()
    {
        var trl = Load(null, "learning_rate=1e-4", "max_steps=7", "per_device_train_batch_size=3", "save_steps=5", "save_total_limit=4", "eval_steps=6");
        var own = Load(null, "lr=1e-4", "steps=7", "batch_size=3", "checkpoint_every=5", "keep_checkpoints=4", "eval_every=6");
        Assert.Equal((1e-4, 7, 3, 5, 4, 6), (trl.Lr, trl.Steps, trl.BatchSize, trl.CheckpointEvery, trl.KeepCheckpoints, trl.EvalEvery));
        Assert.Equal(JsonSerializer.Serialize(own, Json.Options), JsonSerializer.Serialize(trl, Json.Options));
    }

    [Fact]
    public void WarmupRatio_IsCeilOfRatioTimesSteps_AsTransformersRoundsIt()
    {
        // ceil(0.1 x 25) = ceil(2.5) = 3; without the ratio, warmup_steps
        Assert.Equal(3, Load(null, "warmup_ratio=0.1", "max_steps=25").Warmup);
        Assert.Equal(7, Load(null, "warmup_steps=7", "steps=25").Warmup);
    }

    [Fact]
    public void Sft_MaxLength_CutsALongRecordInsteadOfStopping()
    {
        var huge = Path.Combine(AppContext.BaseDirectory, "BadInputs", "huge-record.jsonl");
        string[] args = ["sft", "--data", huge, "--set", "steps=1", "--set", "batch_size=1", "--set", "eval_fraction=0", "--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2"];
        var refused = Run([.. args, "--out", Path.Combine(TestSupport.TempDir(), "a")]);
        Assert.Equal(2, refused.Code);
        Assert.Contains("record is 10010 tokens, longer than context_length 64 (set max_length to cut long records)", refused.Err);
        var (code, output, errors) = Run([.. args, "--out", Path.Combine(TestSupport.TempDir(), "b"), "--set", "max_length=64"]);
        Assert.True(code == 0, errors);
        Assert.Contains("sft: max_length 64: records of 64 tokens or more are cut to 64 (1 of 1 records are 64 tokens now)", output);
    }

    [Fact]
    public void Load_YamlConfig_GivesWhatTheSameJsonConfigGives()
    {
        var dir = TestSupport.TempDir();
        var yaml = TestSupport.WriteLines(dir, "sft.yaml",
            "# as trl sft --config takes it", "learning_rate: 1.0e-4", "max_steps: 12", "tokenizer: gpt2", "min_lr_ratio: .5", "device: cpu",
            "chat_template_kwargs:", "  enable_thinking: false", "  name: 'x'");
        var json = TestSupport.WriteLines(dir, "sft.json",
            """{"lr": 0.0001, "steps": 12, "tokenizer": "gpt2", "min_lr_ratio": 0.5, "device": "cpu", "chat_template_kwargs": {"enable_thinking": false, "name": "x"}}""");
        var fromYaml = Load(yaml);
        Assert.Equal((1e-4, 12, TokenizerKind.Gpt2, 0.5), (fromYaml.Lr, fromYaml.Steps, fromYaml.Tokenizer, fromYaml.MinLrRatio));
        Assert.Equal(JsonSerializer.Serialize(Load(json), Json.Options), JsonSerializer.Serialize(fromYaml, Json.Options));
    }

    [Fact]
    public void Load_YamlOutOfRangeNumber_SameMessageAsJson()
    {
        var yaml = TestSupport.WriteLines(TestSupport.TempDir(), "big.yml", "max_steps: 99999999999");
        var e = Assert.Throws<PpoSharpException>(() => Load(yaml));
        Assert.Equal($"{yaml}: 'steps' is out of range: expected an integer from 1 to 100000000 (got 99999999999)", e.Message);
    }

    [Fact]
    public void GenerationSettings_Resolve_FollowsTransformersThenFlags()
    {
        var dir = TestSupport.TempDir();
        Assert.Equal(new GenerationSettings(false, 1, 0, 1, "default"), GenerationSettings.Resolve(dir, false, null, null, null));
        File.WriteAllText(Path.Combine(dir, GenerationSettings.FileName), """{"do_sample": true, "temperature": 0.6, "top_p": 0.9}""");
        // transformers' GenerationConfig default top_k is 50 where the file sets none
        Assert.Equal(new GenerationSettings(true, 0.6, 50, 0.9, "generation_config.json"), GenerationSettings.Resolve(dir, false, null, null, null));
        Assert.Equal(new GenerationSettings(false, 1, 0, 1, "flags"), GenerationSettings.Resolve(dir, true, null, null, null));
        Assert.Equal(new GenerationSettings(false, 1, 0, 1, "flags"), GenerationSettings.Resolve(dir, false, 0, null, null));
        Assert.Equal(new GenerationSettings(true, 0.8, 50, 0.9, "flags"), GenerationSettings.Resolve(dir, false, 0.8, null, null));
        File.WriteAllText(Path.Combine(dir, GenerationSettings.FileName), """{"do_sample": false, "temperature": 0.6}""");
        Assert.Equal(new GenerationSettings(false, 1, 0, 1, "generation_config.json"), GenerationSettings.Resolve(dir, false, null, null, null));
        Assert.Equal(new GenerationSettings(true, 1, 5, 1, "flags"), GenerationSettings.Resolve(dir, false, null, 5, null));
    }

    [Fact]
    public void GenerateJson_ModelWhoseGenerationConfigSamples_SamplesWithItAndSaysSo()
    {
        var model = TestSupport.HfModel("tiny-llama3");                      // generation_config.json: do_sample, temperature 0.6, top_p 0.9
        var (code, output, errors) = Run("generate", "--model", model, "--prompt", "hi", "--json", "--max-new-tokens", "4");
        Assert.True(code == 0, errors);
        var sampling = JsonNode.Parse(output)!["sampling"]!;
        Assert.Equal("""{"do_sample":true,"temperature":0.6,"top_k":50,"top_p":0.9,"source":"generation_config.json"}""", sampling.ToJsonString());
        (code, output, errors) = Run("generate", "--model", model, "--prompt", "hi", "--json", "--max-new-tokens", "4", "--greedy");
        Assert.True(code == 0, errors);
        Assert.False(JsonNode.Parse(output)!["sampling"]!["do_sample"]!.GetValue<bool>());
    }

    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    [Fact]
    public void Sft_LoraWithoutLr_TrainsAtTenTimesTheDefault_AndSaysSo()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var data = Path.Combine(AppContext.BaseDirectory, "BadInputs", "hf-chat.jsonl");
        string[] Args(string outDir) => ["sft", "--init", model, "--data", data, "--out", outDir, "--set", "lora_r=4", "--set", "steps=1", "--set", "batch_size=1", "--set", "eval_fraction=0", "--set", "warmup_steps=0"];
        var outDir = Path.Combine(TestSupport.TempDir(), "lora");
        var (code, output, errors) = Run(Args(outDir));
        Assert.True(code == 0, errors);
        // SftConfig.Pretrained's lr is TRL's 2e-5; LoRA's default is 10x that
        Assert.Contains("sft: LoRA (lora_r 4) and no lr given: lr 0.0002, 10x the full-model default 0.00002 (set lr to choose)", output);
        Assert.Equal(2e-4, JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, RunDirectory.TrainingFile)))!["lr"]!.GetValue<double>(), 12);
        // AdamW's first step (no warm-up) moves each B weight by about lr: 2e-4 is above the 1e-4 of "barely moved", 1e-5 below it
        Assert.DoesNotContain("barely moved", output);

        var given = Path.Combine(TestSupport.TempDir(), "given");
        (code, output, errors) = Run([.. Args(given), "--set", "learning_rate=1e-5"]);
        Assert.True(code == 0, errors);
        Assert.DoesNotContain("no lr given", output);
        Assert.Contains("warning: sft: the LoRA adapters barely moved by step 1 (largest |B| ", output);

        // an adapter folder as --init is merged, and the run says so
        (code, output, errors) = Run("sft", "--init", outDir, "--data", data, "--out", Path.Combine(TestSupport.TempDir(), "merged"), "--set", "steps=1", "--set", "batch_size=1", "--set", "eval_fraction=0");
        Assert.True(code == 0, errors);
        Assert.Contains($"{outDir} is a LoRA adapter: it is merged into its base ", output);
        Assert.Contains(", and every weight of the merged model trains (set lora_r to train a new adapter on it instead)", output);
        Assert.Equal(1e-5, JsonNode.Parse(File.ReadAllText(Path.Combine(given, RunDirectory.TrainingFile)))!["lr"]!.GetValue<double>(), 12);
    }
}
