using PpoSharp.Training;

namespace PpoSharp.Tests;

public class ConfigTests
{
    private static SftConfig Load(string? file, params string[] sets) => ConfigLoader.Load(new SftConfig(), file, sets, c => c.Validate());

    [Fact]
    public void SftAndRm_ShareTheirCommonKeysFirst_EachWithItsOwnDefaults()
    {
        var sft = System.Text.Json.JsonSerializer.SerializeToNode(new SftConfig(), Json.Options)!.AsObject();
        var rm = System.Text.Json.JsonSerializer.SerializeToNode(new RmConfig(), Json.Options)!.AsObject();
        string[] rmOwn = ["normalize", "load_best_model_at_end", "ensemble", "ensemble_k"];
        Assert.Equal(rm.Select(kv => kv.Key).SkipLast(rmOwn.Length), sft.Select(kv => kv.Key).Take(rm.Count - rmOwn.Length));
        Assert.Equal("steps", sft.First().Key);
        Assert.Equal(rmOwn, rm.Select(kv => kv.Key).TakeLast(rmOwn.Length));
        Assert.Equal((1200, 0.002, 50, 200), ((int)sft["steps"]!, (double)sft["lr"]!, (int)sft["warmup_steps"]!, (int)sft["eval_every"]!));
        Assert.Equal((400, 0.0005, 20, 100), ((int)rm["steps"]!, (double)rm["lr"]!, (int)rm["warmup_steps"]!, (int)rm["eval_every"]!));
    }

    [Fact]
    public void Set_OverridesDefaults_FileThenSetInOrder()
    {
        var file = TestSupport.WriteLines(TestSupport.TempDir(), "c.json", """{"lr": 0.01, "steps": 7, "tokenizer": "gpt2"}""");
        var c = Load(file, "steps=9", "d_model=64");
        Assert.Equal((0.01, 9, 64, TokenizerKind.Gpt2), (c.Lr, c.Steps, c.DModel, c.Tokenizer));
        Assert.Equal(new SftConfig().BatchSize, c.BatchSize);
    }

    [Fact]
    public void UnknownKey_IsRejectedWithAllowedKeys()
    {
        var e = Assert.Throws<PpoSharpException>(() => Load(null, "warmup=1"));
        Assert.StartsWith("--set warmup=1: unknown key 'warmup' (did you mean ", e.Message);
        Assert.Contains("'warmup_steps'", e.Message.Split("; allowed")[0]);
        Assert.Contains("?); allowed: steps, batch_size, gradient_accumulation_steps, num_train_epochs, lr", e.Message);
    }

    [Theory]
    [InlineData("steps=abc", "--set steps=abc: 'steps' expects an integer")]
    [InlineData("lr=fast", "--set lr=fast: 'lr' expects a number")]
    [InlineData("tokenizer=bpe", "--set tokenizer=bpe: 'tokenizer' expects one of char, gpt2")]
    [InlineData("lr=-1", "lr must be > 0 (got -1)")]
    [InlineData("d_model=30", "d_model (30) must be a positive multiple of n_head (4)")]
    [InlineData("eval_fraction=0.9", "eval_fraction must be in [0, 0.5] (got 0.9)")]
    [InlineData("steps", "--set 'steps': expected key=value")]
    public void BadValue_NamesKeyAndProblem(string set, string message) =>
        Assert.Equal(message, Assert.Throws<PpoSharpException>(() => Load(null, set)).Message);

    [Fact]
    public void ConfigFile_InvalidJsonOrMissing_NamesTheFile()
    {
        var dir = TestSupport.TempDir();
        var bad = TestSupport.WriteLines(dir, "bad.json", "{ lr: ");
        Assert.StartsWith($"{bad}: invalid JSON", Assert.Throws<PpoSharpException>(() => Load(bad)).Message);
        Assert.Equal($"{dir}/none.json: config file not found", Assert.Throws<PpoSharpException>(() => Load($"{dir}/none.json")).Message);
    }

    [Fact]
    public void NestedSections_DottedSetAndFileObjects_Merge()
    {
        var file = TestSupport.WriteLines(TestSupport.TempDir(), "demo.json", """{"ppo": {"iterations": 7}, "noise": 0.25}""");
        var c = ConfigLoader.Load(new DemoConfig(), file, ["sft.steps=11", "seed=4"], d => d.Validate());
        Assert.Equal((7, 11, 0.25), (c.Ppo.Iterations, c.Sft.Steps, c.Noise));
        Assert.Equal(new PpoConfig().Lr, c.Ppo.Lr);
        Assert.Equal((4, 4), (c.Sft.Seed, c.Ppo.Seed));
    }

    [Theory]
    [InlineData("ppo.nope=1", "--set ppo.nope=1: unknown key 'ppo.nope'; allowed: ppo.iterations,")]
    [InlineData("ppo.lr=abc", "--set ppo.lr=abc: 'ppo.lr' expects a number")]
    [InlineData("ppo.num_mini_batches=5", "num_mini_batches (5) must divide batch_size (64)")]
    [InlineData("task=chess", "unknown task 'chess'")]
    public void NestedSections_BadKeyOrValue_NamesTheDottedKey(string set, string message) =>
        Assert.Contains(message, Assert.Throws<PpoSharpException>(() => ConfigLoader.Load(new DemoConfig(), null, [set], d => d.Validate())).Message);

    [Fact]
    public void ChatTemplateKwargs_AreAFreeFormMap_FromSetAndFile_WhileOtherKeysStayChecked()
    {
        var file = TestSupport.WriteLines(TestSupport.TempDir(), "c.json", """{"chat_template_kwargs": {"enable_thinking": false, "tools_style": "json"}}""");
        var c = Load(file, "chat_template_kwargs.reasoning_effort=low");
        Assert.Equal(["enable_thinking", "tools_style", "reasoning_effort"], c.ChatTemplateKwargs.Keys);
        Assert.False(c.ChatTemplateKwargs["enable_thinking"].GetBoolean());
        Assert.Equal("low", c.ChatTemplateKwargs["reasoning_effort"].GetString());
        Assert.Empty(new SftConfig().ChatTemplateKwargs);
        var e = Assert.Throws<PpoSharpException>(() => ConfigLoader.Load(new DemoConfig(), null, ["ppo.chat_template_kwargs.enable_thinking=false", "ppo.nope=1"], c => c));
        Assert.Contains("unknown key 'ppo.nope'", e.Message);
    }
}
