using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class TrainingTests
{
    [Fact]
    public void Collate_RightPads_TargetsOnlyWhereTrained()
    {
        var a = new SftExample([10, 11, 12, 13], [false, false, true, true], new Source("t", 1));
        var b = new SftExample([20, 21], [false, true], new Source("t", 2));
        var (inputs, targets) = SftTrainer.Collate([a, b], pad: 0);
        Assert.Equal(new long[] { 10, 11, 12, 20, 0, 0 }, inputs.data<long>().ToArray());
        Assert.Equal(new long[] { -100, 12, 13, 21, -100, -100 }, targets.data<long>().ToArray());
    }

    [Fact]
    public void Loss_IgnoresPromptPositions_EqualsMeanOverTrainedTokens()
    {
        var model = TestSupport.TinyModel();
        var inputs = tensor(new long[] { 1, 2, 3 }, [1, 3]);
        var targets = tensor(new long[] { -100, 4, 5 }, [1, 3]);
        var logp = nn.functional.log_softmax(model.forward(inputs), -1);                 // (1, 3, V)
        double expected = -(logp[0, 1, 4].item<float>() + logp[0, 2, 5].item<float>()) / 2;
        Assert.Equal(expected, SftTrainer.Loss(model, inputs, targets).item<float>(), 5);
    }

    [Theory]
    [InlineData(0, 0.1)]      // warm-up: peak * (0 + 1) / 10
    [InlineData(9, 1.0)]      // end of warm-up: 10 / 10
    [InlineData(10, 1.0)]     // cosine starts at the peak: progress 0, cos 0 = 1
    [InlineData(109, 0.2)]    // last step: progress 99/99 = 1, cos pi = -1: min ratio
    // progress (60 - 10) / (110 - 10 - 1) = 50/99; cos(pi 50/99) = -0.0158659638348;
    // 0.2 + 0.8 * 0.5 * (1 - 0.0158659638348) = 0.593653614466
    [InlineData(60, 0.593653614466)]
    public void CosineWithWarmup_HandComputed(int step, double expected)
    {
        double lr = Optimization.CosineWithWarmup(step, totalSteps: 110, warmupSteps: 10, peak: 1.0, minRatio: 0.2);
        Assert.Equal(expected, lr, 10);
    }

    [Fact]
    public void AdamW_DecaysMatricesOnly()
    {
        var model = TestSupport.TinyModel();
        var optimizer = Optimization.AdamW(model, 1e-3, 0.1, 0.9, 0.99);
        var groups = optimizer.ParamGroups.Cast<TorchSharp.Modules.ParamGroup>().ToList();
        Assert.Equal(2, groups.Count);
        Assert.All(groups[0].Parameters, p => Assert.True(p.dim() >= 2));
        Assert.All(groups[1].Parameters, p => Assert.True(p.dim() < 2));
        Assert.Equal(model.parameters().Count(), groups.Sum(g => g.Parameters.Count()));
    }

    [Fact]
    public void Tokenize_RecordLongerThanContext_ErrorNamesLine()
    {
        var r = new ChatRecord([new(Role.User, new string('a', 40)), new(Role.Assistant, "b")], new Source("d.jsonl", 7));
        var t = SftTrainer.NewTokenizer(TokenizerKind.Char, [r]);
        var e = Assert.Throws<PpoSharpException>(() => SftTrainer.Tokenize([r], t, 32));
        Assert.Equal("d.jsonl:7: record is 45 tokens, longer than context_length 32 (set max_length to cut long records)", e.Message);
    }

    [Fact]
    public void Sft_OnSortTask_LearnsHeldOutAnswers_WithoutLeakingTensors()
    {
        var dir = TestSupport.TrainedSortModel;
        var metrics = MetricsWriter.Read(Path.Combine(dir, "model", MetricsWriter.FileName));
        double first = metrics.Take(10).Average(m => m["loss"].GetDouble());
        double last = metrics.TakeLast(10).Average(m => m["loss"].GetDouble());
        Assert.True(last < first / 4, $"loss fell only from {first:F3} to {last:F3}");
        Assert.True(metrics[^1].ContainsKey("eval_loss"));

        // After the first steps (optimizer state created), no step leaves tensors behind.
        var live = metrics.Skip(5).Select(m => m["live_tensors"].GetInt64()).Distinct().ToList();
        Assert.Single(live);

        var (model, tokenizer) = RunDirectory.LoadPolicy(Path.Combine(dir, "model"));
        var prompts = Jsonl.ReadPrompts(Path.Combine(dir, "data", TaskData.EvalFile)).Records;
        var result = Evaluator.Evaluate(model, tokenizer, prompts, new EditDistance(), maxNewTokens: 16);
        Assert.True(result.ExactMatch > 0.15, $"held-out exact match {result.ExactMatch:P0}");
        Assert.True(result.RewardMean > 0.6, $"held-out edit-distance reward {result.RewardMean:F2}");
    }

    [Fact]
    public void RunDirectory_SaveThenLoad_GivesIdenticalLogits()
    {
        var dir = TestSupport.TempDir();
        var tokenizer = SftTrainer.NewTokenizer(TokenizerKind.Char, []);
        manual_seed(1);
        var model = new Decoder(new DecoderSpec(tokenizer.VocabSize, 16, 1, 2, 8));
        RunDirectory.SavePolicy(dir, model, tokenizer, new SftConfig());
        var (loaded, loadedTokenizer) = RunDirectory.LoadPolicy(dir);
        var ids = tensor(new long[] { 7, 8, 9 }, [1, 3]);
        Assert.True(model.forward(ids).equal(loaded.forward(ids)).all().item<bool>());
        Assert.Equal(tokenizer.Encode("hello"), loadedTokenizer.Encode("hello"));
        Assert.False(File.Exists(Path.Combine(dir, RunDirectory.ModelFile + ".tmp")));
    }

    [Fact]
    public void RunDirectory_CorruptOrMismatchedModel_IsAClearError()
    {
        var dir = TestSupport.TempDir();
        var tokenizer = SftTrainer.NewTokenizer(TokenizerKind.Char, []);
        var model = new Decoder(new DecoderSpec(tokenizer.VocabSize, 16, 1, 2, 8));
        RunDirectory.SavePolicy(dir, model, tokenizer, new SftConfig());
        var modelPath = Path.Combine(dir, RunDirectory.ModelFile);
        var good = File.ReadAllBytes(modelPath);

        File.WriteAllBytes(modelPath, good[..20]);
        Assert.Contains("not a safetensors file", Assert.Throws<PpoSharpException>(() => RunDirectory.LoadPolicy(dir)).Message);
        File.WriteAllText(modelPath, "PK\u0003\u0004 a zip or pickle file");
        Assert.Contains("not a safetensors file", Assert.Throws<PpoSharpException>(() => RunDirectory.LoadPolicy(dir)).Message);

        var other = new Decoder(new DecoderSpec(tokenizer.VocabSize, 16, 1, 2, 16));     // wider model, same names
        RunDirectory.SavePolicy(TestSupport.TempDir() is var d2 ? d2 : "", other, tokenizer, new SftConfig());
        File.Copy(Path.Combine(d2, RunDirectory.ModelFile), modelPath, overwrite: true);
        var e = Assert.Throws<PpoSharpException>(() => RunDirectory.LoadPolicy(dir));
        Assert.Contains("has shape [", e.Message);
        Assert.Contains("config.json implies [", e.Message);
        Assert.StartsWith(dir, e.Message);

        Assert.Contains("model directory not found", Assert.Throws<PpoSharpException>(() => RunDirectory.LoadPolicy(Path.Combine(dir, "nope"))).Message);
        Assert.Contains("config.json: missing", Assert.Throws<PpoSharpException>(() => RunDirectory.LoadPolicy(TestSupport.TempDir())).Message);
    }

    [Fact]
    public void PrepareOutput_NonEmptyWithoutForce_IsRefused()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(dir, "keep.txt"), "x");
        Assert.Contains("output directory is not empty", Assert.Throws<PpoSharpException>(() => RunDirectory.PrepareOutput(dir, false)).Message);
        RunDirectory.PrepareOutput(dir, true);
        Assert.True(File.Exists(Path.Combine(dir, "keep.txt")));
    }
}
