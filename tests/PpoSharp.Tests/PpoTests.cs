using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Training;

namespace PpoSharp.Tests;

public class PpoTests
{
    private static PpoConfig Tiny(CriticArrangement critic) => new()
    {
        Iterations = 20, BatchSize = 32, NumMiniBatches = 2, NumPpoEpochs = 2, Lr = 3e-4, ResponseLength = 10, Critic = critic, Seed = 5,
    };

    [Theory]
    [InlineData(CriticArrangement.Separate)]
    [InlineData(CriticArrangement.Shared)]
    public void Ppo_ShortRun_RaisesMeanReward_RatioOneOnFirstMinibatch_NoTensorGrowth(CriticArrangement critic)
    {
        // The SFT model imitated demonstrations of which 60% sort descending; the rule reward prefers ascending.
        var dir = TestSupport.FlawedSortModel;
        var prompts = Jsonl.ReadPrompts(Path.Combine(dir, "data", TaskData.PromptsFile)).Records;
        var outDir = Path.Combine(TestSupport.TempDir(), "ppo");
        using var trainer = PpoTrainer.FromRunDirectory(Path.Combine(dir, "model"), new EditDistance(), prompts, Tiny(critic), TextWriter.Null);
        var heldOut = Jsonl.ReadPrompts(Path.Combine(dir, "data", TaskData.EvalFile)).Records;
        double before = Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, heldOut, new EditDistance(), 10).RewardMean;
        trainer.Train(outDir);
        double after = Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, heldOut, new EditDistance(), 10).RewardMean;
        Assert.True(after > before + 0.1, $"held-out greedy reward {before:F3} -> {after:F3}");

        var rows = MetricsWriter.Read(Path.Combine(outDir, MetricsWriter.FileName));
        Assert.Equal(20, rows.Count);
        double first = rows.Take(3).Average(r => r["reward_mean"].GetDouble());
        double last = rows.TakeLast(10).Average(r => r["reward_mean"].GetDouble());
        Assert.True(last > first + 0.05, $"reward rose only from {first:F2} to {last:F2}: " + string.Join(" ", rows.Select(r => $"{r["reward_mean"].GetDouble():F2}/{r["entropy"].GetDouble():F2}/{r["approx_kl"].GetDouble():F3}/{r["clipfrac"].GetDouble():F2}")));
        Assert.All(rows, r => Assert.Equal(1.0, r["first_ratio_mean"].GetDouble(), 4));
        Assert.All(rows, r => Assert.InRange(r["kl"].GetDouble(), -0.5, 20));
        Assert.Single(rows.Skip(2).Select(r => r["live_tensors"].GetInt64()).Distinct());
        foreach (var key in new[] { "reward_std", "kl_coef", "approx_kl", "clipfrac", "value_clipfrac", "entropy", "policy_loss", "value_loss",
                     "explained_variance", "ratio_mean", "ratio_max", "response_length", "eos_rate", "rollout_seconds", "update_seconds", "tokens_per_second" })
            Assert.True(rows[0].ContainsKey(key), key);
        Assert.True(RunDirectory.IsScalarModel(Path.Combine(outDir, RunDirectory.CriticFolder)));
        var (saved, _) = RunDirectory.LoadPolicy(outDir);
        Assert.Equal(trainer.Actor.Config, saved.Config);
    }

    [Fact]
    public void SharedCritic_OwnsOnlyItsHead_SeparateCriticOwnsABackbone()
    {
        var shared = new CriticModel(null, 16);
        var separate = new CriticModel(TestSupport.TinyModel(), 16);
        Assert.Equal(4, shared.parameters().Count());
        Assert.True(separate.parameters().Count() > 4);
        Assert.True(shared.Shared);
    }

    [Fact]
    public void ValueHead_StartsAtZero()
    {
        var critic = new CriticModel(null, 16);
        var hidden = TorchSharp.torch.randn(2, 5, 16);
        var values = critic.Values(hidden, hidden, hidden, hidden, start: 1, length: 3);
        Assert.Equal(new long[] { 2, 3 }, values.shape);
        Assert.Equal(0f, values.abs().max().item<float>());
    }

    [Theory]
    [InlineData("num_mini_batches=3", "num_mini_batches (3) must divide batch_size (64)")]
    [InlineData("lam=1.5", "lam must be in [0, 1] (got 1.5)")]
    [InlineData("cliprange=0", "cliprange must be > 0 (got 0)")]
    [InlineData("critic=both", "'critic' expects one of separate, shared")]
    [InlineData("kl_estimator=k2", "'kl_estimator' expects one of k1, k3")]
    public void PpoConfig_BadValue_NamesTheKey(string set, string message) =>
        Assert.Contains(message, Assert.Throws<PpoSharpException>(() => ConfigLoader.Load(new PpoConfig(), null, [set], c => c.Validate())).Message);

    [Fact]
    public void PromptLongerThanContext_ErrorNamesTheRecord()
    {
        var dir = TestSupport.TempDir();
        var path = TestSupport.WriteLines(dir, "p.jsonl", $$"""{"messages":[{"role":"user","content":"{{new string('a', 40)}}"}],"solution":"a"}""");
        var prompts = Jsonl.ReadPrompts(path).Records;
        var e = Assert.Throws<PpoSharpException>(() => PpoTrainer.FromRunDirectory(Path.Combine(TestSupport.TrainedSortModel, "model"), new ExactMatch(), prompts, new PpoConfig(), TextWriter.Null));
        Assert.Equal($"{path}:1: prompt is 43 tokens, leaving no room to respond within context_length 32", e.Message);
    }
}
