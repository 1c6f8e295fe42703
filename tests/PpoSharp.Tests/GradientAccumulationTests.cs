using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// TRL's gradient_accumulation_steps and num_train_epochs in sft, rm and dpo: k micro-batches of b make the update of one
/// batch of k x b (same examples, same order), and epochs make the step count transformers' Trainer makes.
/// </summary>
public class GradientAccumulationTests
{
    private static readonly CharTokenizer Tokenizer = new("abcdefghij".Select(c => c.ToString()));
    private static readonly Source Here = new("test", 1);

    /// <summary>Random sequences of 4 to 19 tokens whose first third is prompt (not trained): the micro-batches differ in trained-token counts.</summary>
    private static List<SftExample> Examples(int n, int seed)
    {
        var rng = new Random(seed);
        return [.. Enumerable.Range(0, n).Select(_ =>
        {
            int length = rng.Next(4, 20);
            var ids = Enumerable.Range(0, length).Select(_ => rng.Next(1, Tokenizer.VocabSize)).ToArray();
            return new SftExample(ids, [.. ids.Select((_, i) => i >= length / 3)], Here);
        })];
    }

    private static Decoder Model() => TestSupport.TinyModel(vocab: Tokenizer.VocabSize, seed: 4);

    /// <summary>
    /// Plain SGD, so that each weight's change is lr x the accumulated gradient itself: AdamW's first steps move every weight
    /// by about lr x sign(gradient), which hides a wrong scale and turns float noise in a zero gradient into a full step.
    /// </summary>
    private static TorchSharp.Modules.OptimizerHelper Sgd(nn.Module model) => optim.SGD(model.parameters(), 0.05);

    private static T Settings<T>(T config, int batch, int accumulation) where T : TrainingConfig => (T)(config with
    {
        Steps = 3, BatchSize = batch, GradientAccumulationSteps = accumulation, Lr = 0.5, WarmupSteps = 0, EvalFraction = 0,
        CheckpointEvery = 100, WeightDecay = 0.1, MaxGradNorm = 100,
    });

    /// <summary>Loss and pre-clipping gradient norm of every step, then every weight: the two runs must agree on all of them.</summary>
    private static void AssertSameRun(string a, string b, nn.Module modelA, nn.Module modelB)
    {
        var (rowsA, rowsB) = (MetricsWriter.Read(Path.Combine(a, MetricsWriter.FileName)), MetricsWriter.Read(Path.Combine(b, MetricsWriter.FileName)));
        Assert.Equal(rowsA.Count, rowsB.Count);
        for (int i = 0; i < rowsA.Count; i++)
            foreach (var key in new[] { "loss", "grad_norm" })                                // grad_norm: the scale, which Adam's update hides
                Assert.True(Math.Abs(rowsA[i][key].GetDouble() - rowsB[i][key].GetDouble()) < 1e-5 * Math.Max(1, Math.Abs(rowsA[i][key].GetDouble())),
                    $"step {i + 1} {key}: {rowsA[i][key]} vs {rowsB[i][key]}");
        var weightsB = modelB.state_dict();
        foreach (var (name, w) in modelA.state_dict())
            Assert.True(w.allclose(weightsB[name], rtol: 0, atol: 1e-5), $"{name}: max difference {(w - weightsB[name]).abs().max().item<float>()}");
    }

    [Fact]
    public void SftAccumulation_TwoMicroBatchesOfFour_EqualOneBatchOfEight()
    {
        var examples = Examples(40, seed: 1);
        var (one, two) = (Path.Combine(TestSupport.TempDir(), "one"), Path.Combine(TestSupport.TempDir(), "two"));
        using var modelA = Model();
        using var modelB = Model();
        new SftTrainer(Settings(new SftConfig(), 8, 1), TextWriter.Null) { NewOptimizer = Sgd }.Train(modelA, Tokenizer, examples, one);
        new SftTrainer(Settings(new SftConfig(), 4, 2), TextWriter.Null) { NewOptimizer = Sgd }.Train(modelB, Tokenizer, examples, two);
        AssertSameRun(one, two, modelA, modelB);
    }

    [Fact]
    public void RmAccumulation_FourMicroBatchesOfTwo_EqualOneBatchOfEight()
    {
        var examples = Examples(60, seed: 2);
        var pairs = examples.Chunk(2).Select((p, i) => new PreferencePair(p[0].Ids, p[1].Ids, i % 3 * 0.5f, Here)).ToList();
        var (one, two) = (Path.Combine(TestSupport.TempDir(), "one"), Path.Combine(TestSupport.TempDir(), "two"));
        using var modelA = new RewardModel(Model());
        using var modelB = new RewardModel(Model());
        var config = new RmConfig { Normalize = false, LoadBestModelAtEnd = false };
        new RewardTrainer(Settings(config, 8, 1), TextWriter.Null) { NewOptimizer = Sgd }.Train(modelA, Tokenizer, pairs, one);
        new RewardTrainer(Settings(config, 2, 4), TextWriter.Null) { NewOptimizer = Sgd }.Train(modelB, Tokenizer, pairs, two);
        AssertSameRun(one, two, modelA, modelB);
        var (rowsA, rowsB) = (MetricsWriter.Read(Path.Combine(one, MetricsWriter.FileName)), MetricsWriter.Read(Path.Combine(two, MetricsWriter.FileName)));
        Assert.Equal(rowsA.Select(r => r["accuracy"].GetDouble()), rowsB.Select(r => r["accuracy"].GetDouble()), (x, y) => Math.Abs(x - y) < 1e-9);
    }

    [Fact]
    public void DpoAccumulation_WithRpo_TwoMicroBatchesOfThree_EqualOneBatchOfSix()
    {
        // rpo_alpha 1: the NLL term is normalised over the whole step's chosen tokens, not per micro-batch.
        var examples = Examples(60, seed: 3);
        var rng = new Random(5);
        var pairs = examples.Chunk(2).Select(p => new DpoPair(p[0], p[1], -10 - rng.NextSingle() * 20, -10 - rng.NextSingle() * 20)).ToList();
        var (one, two) = (Path.Combine(TestSupport.TempDir(), "one"), Path.Combine(TestSupport.TempDir(), "two"));
        using var modelA = Model();
        using var modelB = Model();
        var config = new DpoConfig { RpoAlpha = 1 };
        new DpoTrainer(Settings(config, 6, 1), TextWriter.Null) { NewOptimizer = Sgd }.Train(modelA, Tokenizer, pairs, one);
        new DpoTrainer(Settings(config, 3, 2), TextWriter.Null) { NewOptimizer = Sgd }.Train(modelB, Tokenizer, pairs, two);
        AssertSameRun(one, two, modelA, modelB);
    }

    [Fact]
    public void StepsFor_Epochs_CountAsTransformersTrainer()
    {
        // 10 records, batch 3: 4 micro-batches an epoch (3 + 3 + 3 + 1); accumulation 2: 2 steps an epoch.
        var config = new SftConfig { BatchSize = 3, GradientAccumulationSteps = 2, NumTrainEpochs = 2 };
        Assert.Equal(2, config.StepsPerEpoch(10));
        Assert.Equal(4, config.StepsFor(10));                                          // ceil(2 x 2)
        Assert.Equal(3, (config with { NumTrainEpochs = 1.5 }).StepsFor(10));          // ceil(1.5 x 2)
        Assert.Equal(4, (config with { GradientAccumulationSteps = 3 }).StepsFor(10)); // ceil(4 / 3) = 2 an epoch (3 + 1 micro-batches)
        Assert.Equal(config.Steps, (config with { NumTrainEpochs = null }).StepsFor(10));
    }

    [Fact]
    public void Batches_Epochs_EachRecordOncePerEpoch_NewShuffleEachEpoch()
    {
        var config = new SftConfig { BatchSize = 3, GradientAccumulationSteps = 2, NumTrainEpochs = 2, Seed = 7 };
        var run = new SupervisedRun(config, TestSupport.TinyModel(), null!, new NonFiniteGuard(1, TextWriter.Null, "sft"));
        var records = Enumerable.Range(0, 10).ToList();
        var steps = Enumerable.Range(1, config.StepsFor(10)).Select(s => run.Batches(records, s)).ToList();
        Assert.Equal([2, 2, 2, 2], steps.Select(s => s.Count));                         // micro-batches per step
        Assert.Equal([3, 3, 3, 1], steps[0].Concat(steps[1]).Select(b => b.Count));     // the epoch's last micro-batch is short
        var epoch1 = steps.Take(2).SelectMany(s => s.SelectMany(b => b)).ToList();
        var epoch2 = steps.Skip(2).SelectMany(s => s.SelectMany(b => b)).ToList();
        Assert.Equal(records, epoch1.Order());
        Assert.Equal(records, epoch2.Order());
        Assert.NotEqual(epoch1, epoch2);
        Assert.NotEqual(records, epoch1);                                               // shuffled
    }

    [Fact]
    public void SftCommand_TwoEpochsOfTenRecords_MakesFourSteps_AndResumeSaysFinished()
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "chat.jsonl", [.. Enumerable.Range(0, 10).Select(i =>
            $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"q{i}\"}}, {{\"role\": \"assistant\", \"content\": \"a{i}\"}}]}}")]);
        string[] args = ["sft", "--data", data, "--out", Path.Combine(dir, "run"), "--set", "num_train_epochs=2", "--set", "per_device_train_batch_size=3",
            "--set", "gradient_accumulation_steps=2", "--set", "eval_fraction=0", "--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2"];
        var (code, output, errors) = TestSupport.RunCli(args);
        Assert.True(code == 0, errors);
        Assert.Contains("num_train_epochs 2: 4 steps of 2 x 3 over 10 training records (2 per epoch)", output);
        Assert.Equal([1, 2, 3, 4], MetricsWriter.Read(Path.Combine(dir, "run", MetricsWriter.FileName)).Select(r => r["step"].GetInt32()));
        var again = TestSupport.RunCli([.. args, "--resume"]);
        Assert.True(again.Code == 0, again.Err);
        Assert.Contains("is finished (4 of 4 steps); nothing to resume", again.Out);
    }
}
