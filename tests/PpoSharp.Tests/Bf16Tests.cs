using TorchSharp.Modules;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>A fact that runs only when PPOSHARP_BF16_TRAINING is set: training runs in bf16 take minutes on a CPU without AVX512-BF16 or AMX.</summary>
public sealed class Bf16TrainingFactAttribute : FactAttribute
{
    public Bf16TrainingFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("PPOSHARP_BF16_TRAINING") is null) Skip = "set PPOSHARP_BF16_TRAINING=1 to train in bf16 (minutes on an AVX2-only CPU)";
    }
}

/// <summary>TRL's bf16 key: when it turns on, and that bf16 matrix products train like fp32 from fp32 master weights.</summary>
public class Bf16Tests
{
    [Theory]
    [InlineData(null, true, true, null)]
    [InlineData(null, false, false, "bf16: off")]
    [InlineData(true, false, true, "slower than fp32 here")]
    [InlineData(false, true, false, null)]
    [InlineData(true, true, true, null)]
    public void ResolveBf16_KeyAndDevice_OnWhereFastAndSaysWhy(bool? key, bool fast, bool on, string? note)
    {
        var (resolved, said) = ComputeKeys.ResolveBf16(key, fast);
        Assert.Equal(on, resolved);
        if (note is null) Assert.Null(said);
        else Assert.Contains(note, said);
    }

    /// <summary>
    /// The same batch with fp32 and with bf16 products: the loss moves by bf16's rounding (8 mantissa bits: above 0 and
    /// within 1%), the weights and their gradients stay fp32, and the gradients point the same way (cosine above 0.99).
    /// </summary>
    [Fact]
    public void MatmulDtype_Bf16_LossNearFp32_GradientsFp32AndAligned()
    {
        var model = TestSupport.TinyModel(vocab: 40);
        model.train();
        using var g = new Generator(3);
        var inputs = randint(0, 40, [4, 16], generator: g);
        var targets = randint(0, 40, [4, 16], generator: g);
        AssertBf16NearFp32(model, inputs, targets, model.parameters().ToList());
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
    }

    /// <summary>
    /// Llama-style blocks (rotary positions, grouped-query attention, SwiGLU, Qwen3's q/k norms) with bf16 products,
    /// whose MLP activations stay in bf16 while attention and the residual stream stay fp32: hidden states are fp32 and
    /// near fp32's; a cached decode gives the full forward's; the loss is within 1% of fp32's and the gradients point
    /// the same way.
    /// </summary>
    [Fact]
    public void MatmulDtype_Bf16_LlamaBlocks_CachedDecodeMatchesFullForward_LossNearFp32()
    {
        manual_seed(7);
        using var model = new Decoder(new DecoderSpec(64, 32, 2, 4, 32)
        {
            KvHeads = 2, Intermediate = 48, Norm = NormKind.RmsNorm, Positions = PositionKind.Rope, Mlp = MlpKind.SwiGlu, TiedHead = true, QkNorm = true,
        });
        var ids = randint(0, 64, [2, 6], generator: new Generator(4));
        using (no_grad())
        {
            var fp32 = model.Hidden(ids);                                                 // (2, 6, C)
            model.MatmulDtype = ScalarType.BFloat16;
            var whole = model.Hidden(ids);                                                // (2, 6, C)
            Assert.Equal(ScalarType.Float32, whole.dtype);
            double gap = (whole - fp32).abs().max().item<float>(), scale = fp32.abs().max().item<float>();
            Assert.InRange(gap, 1e-6 * scale, 0.05 * scale);                              // bf16's rounding, not fp32's
            using var cache = new KvCache(model.Config, 2, 6, ScalarType.Float32, CPU);
            var first = model.Hidden(ids.narrow(1, 0, 2), cache: cache);                 // (2, 2, C)
            var rest = model.Hidden(ids.narrow(1, 2, 4), cache: cache);                  // (2, 4, C) after 2 cached positions
            Assert.True(cat([first, rest], 1).allclose(whole, rtol: 1e-3, atol: 1e-3 * scale));
        }
        model.train();
        var targets = randint(0, 64, [2, 6], generator: new Generator(5));
        AssertBf16NearFp32(model, ids, targets, model.parameters().ToList());
    }

    /// <summary>A LoRA view with bf16 products: its adapters take the bf16 activations in fp32, so the loss is within 1% of fp32's and the adapters' gradients are fp32 and point the same way.</summary>
    [Fact]
    public void MatmulDtype_Bf16_LoraView_LossNearFp32_AdapterGradientsFp32AndAligned()
    {
        manual_seed(8);
        using var model = new Decoder(new DecoderSpec(64, 32, 2, 4, 32)
        {
            KvHeads = 2, Intermediate = 48, Norm = NormKind.RmsNorm, Positions = PositionKind.Rope, Mlp = MlpKind.SwiGlu, TiedHead = true,
        });
        using var view = LoraModels.NewView(model, new LoraSettings(8, 16, 0, LoraSettings.AllLinear));
        view.train();
        using (no_grad()) foreach (var (name, p) in view.named_parameters().Where(x => x.name.Contains("lora_B"))) p.normal_(0, 0.1);
        var ids = randint(0, 64, [2, 6], generator: new Generator(4));
        var targets = randint(0, 64, [2, 6], generator: new Generator(5));
        AssertBf16NearFp32(view, ids, targets, view.parameters().Where(p => p.requires_grad).ToList());
    }

    /// <summary>
    /// One SFT loss and its gradients of <paramref name="trained"/> with fp32 products, then with bf16 ones: the loss
    /// moves by bf16's rounding (above 0 and within 1%), the gradients stay fp32 and point the same way (cosine above 0.99).
    /// </summary>
    private static void AssertBf16NearFp32(Decoder model, Tensor ids, Tensor targets, List<Parameter> trained)
    {
        (double Loss, Tensor Grad) Run(ScalarType? matmul)
        {
            model.MatmulDtype = matmul;
            model.zero_grad();
            var loss = SftTrainer.Loss(model, ids, targets);
            loss.backward();
            Assert.All(trained, p => Assert.Equal(ScalarType.Float32, p.grad!.dtype));
            return (loss.item<float>(), cat(trained.Select(p => p.grad!.flatten()).ToList()).clone());
        }
        var (fp32, g32) = Run(null);
        var (bf16, g16) = Run(ScalarType.BFloat16);
        Assert.NotEqual(fp32, bf16);
        Assert.True(Math.Abs(bf16 - fp32) < 0.01 * fp32, $"fp32 {fp32} bf16 {bf16}");
        double cosine = (g32 * g16).sum().item<float>() / (g32.norm().item<float>() * g16.norm().item<float>());
        Assert.True(cosine > 0.99, $"cosine {cosine}");
    }

    [Fact]
    public void DefaultVariable_SetsTheDefault_NotASetKey_AndRejectsOtherValues()
    {
        var was = Environment.GetEnvironmentVariable(ComputeKeys.DefaultVariable);
        try
        {
            Environment.SetEnvironmentVariable(ComputeKeys.DefaultVariable, "1");
            Assert.True(ComputeKeys.DefaultFromEnvironment());
            var model = TestSupport.TinyModel(seed: 2);
            new SftConfig().ApplyTo(model, TextWriter.Null);
            Assert.Equal(ScalarType.BFloat16, model.MatmulDtype);                                  // unset key: the variable's 1
            new SftConfig { Bf16 = false }.ApplyTo(model, TextWriter.Null);
            Assert.Null(model.MatmulDtype);                                                        // a set key wins
            Environment.SetEnvironmentVariable(ComputeKeys.DefaultVariable, "0");
            new SftConfig().ApplyTo(model, TextWriter.Null);
            Assert.Null(model.MatmulDtype);
            Environment.SetEnvironmentVariable(ComputeKeys.DefaultVariable, "yes");
            Assert.Equal("PPOSHARP_BF16=yes: expected 0 or 1", Assert.Throws<PpoSharpException>(() => ComputeKeys.DefaultFromEnvironment()).Message);
        }
        finally { Environment.SetEnvironmentVariable(ComputeKeys.DefaultVariable, was); }
    }

    /// <summary>100 SFT steps of the sort task's tiny model: the final loss with bf16=true is within 2% of fp32's.</summary>
    [Bf16TrainingFact]
    public void Sft_Bf16_100Steps_LossWithin2PercentOfFp32()
    {
        var dir = TestSupport.TempDir();
        TaskData.Write(new SortLettersTask(), Path.Combine(dir, "data"), 400, 10, 0, seed: 3);
        var records = Jsonl.ReadChat(Path.Combine(dir, "data", TaskData.SftFile)).Records;
        var config = TestSupport.TinySft(100) with { BatchSize = 16, DModel = 32 };
        double fp32 = Demo.RunSft(records, null, Path.Combine(dir, "fp32"), config with { Bf16 = false }, TextWriter.Null).FinalLoss;
        double bf16 = Demo.RunSft(records, null, Path.Combine(dir, "bf16"), config with { Bf16 = true }, TextWriter.Null).FinalLoss;
        Assert.True(Math.Abs(bf16 - fp32) <= 0.02 * fp32, $"final loss fp32 {fp32:F4}, bf16 {bf16:F4}");
    }

    /// <summary>
    /// 100 SFT steps of the tiny Llama 3 fixture (GQA, SwiGLU, rotary positions, tied head, a 128,256-token vocabulary):
    /// the loss on 80 held-out records with bf16=true is within 2% of fp32's (the held-out loss, since one batch's
    /// loss moves by more than that from step to step).
    /// </summary>
    [Bf16TrainingFact]
    public void Sft_Bf16_TinyLlama_100Steps_HeldOutLossWithin2PercentOfFp32()
    {
        var dir = TestSupport.TempDir();
        TaskData.Write(new SortLettersTask(), Path.Combine(dir, "data"), 400, 10, 0, seed: 3);
        var records = Jsonl.ReadChat(Path.Combine(dir, "data", TaskData.SftFile)).Records;
        var config = SftConfig.Pretrained with { Steps = 100, BatchSize = 16, Lr = 1e-2, WarmupSteps = 5, EvalFraction = 0.2, EvalEvery = 100, CheckpointEvery = 100 };
        var model = TestSupport.HfModel("tiny-llama3");
        double fp32 = Demo.RunSft(records, model, Path.Combine(dir, "fp32"), config with { Bf16 = false }, TextWriter.Null).EvalLoss!.Value;
        double bf16 = Demo.RunSft(records, model, Path.Combine(dir, "bf16"), config with { Bf16 = true }, TextWriter.Null).EvalLoss!.Value;
        Assert.True(fp32 < Math.Log(128_256) / 2, $"fp32 held-out loss {fp32:F4}");           // it learns: ln V is a guess's loss
        Assert.True(Math.Abs(bf16 - fp32) <= 0.02 * fp32, $"held-out loss fp32 {fp32:F4}, bf16 {bf16:F4}");
    }

    /// <summary>PPO with bf16: old log-probs and the update's come from the same bf16 path, so the first minibatch's ratio is 1 within 1e-2.</summary>
    [Bf16TrainingFact]
    public void Ppo_Bf16_FirstRatioMeanWithinOnePercentOfOne()
    {
        var dir = TestSupport.FlawedSortModel;
        var prompts = Jsonl.ReadPrompts(Path.Combine(dir, "data", TaskData.PromptsFile)).Records;
        var outDir = Path.Combine(TestSupport.TempDir(), "ppo");
        var config = new PpoConfig { Iterations = 2, BatchSize = 16, NumMiniBatches = 2, NumPpoEpochs = 1, Lr = 3e-4, ResponseLength = 8, Seed = 5, Bf16 = true };
        using var trainer = PpoTrainer.FromRunDirectory(Path.Combine(dir, "model"), new EditDistance(), prompts, config, TextWriter.Null);
        Assert.Equal(ScalarType.BFloat16, trainer.Actor.MatmulDtype);
        trainer.Train(outDir);
        var rows = MetricsWriter.Read(Path.Combine(outDir, MetricsWriter.FileName));
        Assert.Equal(2, rows.Count);
        Assert.All(rows, r => Assert.InRange(r["first_ratio_mean"].GetDouble(), 0.99, 1.01));
    }
}
