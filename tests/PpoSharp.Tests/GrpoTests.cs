using System.Diagnostics;
using System.Text.Json;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The critic-free trainers (GRPO, RLOO, REINFORCE++) on PPO's rollout path.</summary>
public class GrpoTests
{

    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");
    private static string PromptsFile => Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile);
    private static IReadOnlyList<PromptRecord> Prompts => Jsonl.ReadPrompts(PromptsFile).Records;

    /// <summary>A small, fast GRPO run: 8 prompts x 4 completions of at most 8 tokens per iteration.</summary>
    private static GrpoConfig Small(params string[] sets) => ConfigLoader.Load(new GrpoConfig(), null,
        ["iterations=4", "batch_size=8", "num_generations=4", "num_mini_batches=2", "max_completion_length=8", "checkpoint_every=2", "lr=3e-4", "seed=3", .. sets],
        c => c.Validate());

    private static List<Dictionary<string, JsonElement>> Rows(string dir) => MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));

    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    [Theory]
    [InlineData("num_generations=1", "num_generations must be at least 2 for algo grpo")]
    [InlineData("algo=ppo", "algo: 'ppo' is not supported (allowed: grpo, rloo, reinforce++, reinforce++-baseline)")]
    [InlineData("loss_type=sum", "'loss_type' expects one of grpo, bnpo, dr_grpo, dapo")]
    [InlineData("scale_rewards=std", "'scale_rewards' expects one of group, batch, none")]
    public void Cli_BadGrpoConfig_OneLineNamingTheKey_ExitCode2(string set, string message)
    {
        var dir = TestSupport.TempDir();
        var (code, _, errors) = Run("grpo", "--data", PromptsFile, "--init", Init, "--reward", "exact-match", "--out", Path.Combine(dir, "g"), "--set", set);
        Assert.Equal(2, code);
        Assert.Contains(message, errors);
        Assert.Single(errors.Trim().Split('\n'));
        Assert.False(Directory.Exists(Path.Combine(dir, "g")));
    }

    [Theory]
    [InlineData("rloo")]
    [InlineData("reinforce++-baseline")]
    public void GroupEstimators_RefuseOneGeneration(string algo) =>
        Assert.Contains($"num_generations must be at least 2 for algo {algo}",
            Assert.Throws<PpoSharpException>(() => Small($"algo={algo}", "num_generations=1")).Message);

    [Fact]
    public void ReinforcePlusPlus_AcceptsOneGeneration() => Assert.Equal(1, Small("algo=reinforce++", "num_generations=1").NumGenerations);

    /// <summary>A reward that depends on the prompt only: every group's completions score alike.</summary>
    private sealed class PromptLength : IRewardFunction
    {
        public string Name => "prompt-length";
        public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batch.Select(x => (double)x.Prompt.Length).ToArray();
    }

    [Fact]
    public void Rollout_HasGContiguousSamplesPerPrompt_FlatGroupsGetZeroAdvantage_NoCriticNoValues()
    {
        using var trainer = PpoTrainer.FromRunDirectory(Init, new PromptLength(), Prompts, Small(), TextWriter.Null);
        Assert.Null(trainer.Critic);
        Assert.Null(trainer.Reference);                                             // beta = 0: no reference model loaded
        Assert.Equal(trainer.Actor.parameters().Select(p => p.Handle).ToHashSet(), trainer.OptimizedParameters.Select(p => p.Handle).ToHashSet());

        var batch = trainer.NextRolloutBatch();
        Assert.Equal(32, batch.Count);
        for (int g = 0; g < 8; g++) Assert.Single(batch.Skip(4 * g).Take(4).Distinct());   // 4 copies of one prompt, in a row
        Assert.Equal(8, batch.Distinct().Count());
        using var scope = NewDisposeScope();
        var rollout = trainer.CollectRollouts(batch);
        Assert.Null(rollout.OldValues);
        Assert.Null(rollout.RefLogProbs);
        Assert.Equal(Enumerable.Range(0, 32).Select(i => (long)(i / 4)).ToArray(), rollout.GroupIds!.data<long>().ToArray());
        var experience = trainer.ComputeAdvantages(rollout);
        Assert.Equal(0f, experience.Advantages!.abs().max().item<float>());         // every group flat: exactly 0
        Assert.Null(experience.Returns);
    }

    [Fact]
    public void Grpo_DifferingGroupsGetCentredAdvantages_PerGroupMeanZero()
    {
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Small("temperature=1.5"), TextWriter.Null);
        using var scope = NewDisposeScope();
        var experience = trainer.ComputeAdvantages(trainer.CollectRollouts(trainer.NextRolloutBatch()));
        var sequence = Algorithms.Masked.RowMean(experience.Advantages!, experience.ResponseMask).view(8, 4);   // (groups, G)
        var scores = experience.Scores.view(8, 4);
        Assert.True(sequence.sum(1).abs().max().item<float>() < 1e-4);
        var flat = scores.amax(1).eq(scores.amin(1));
        Assert.True(flat.logical_not().any().item<bool>(), "no group with differing rewards at temperature 1.5");
        Assert.All(Enumerable.Range(0, 8), g =>
            Assert.Equal(flat[g].item<bool>(), sequence[g].abs().max().item<float>() == 0));
    }

    /// <summary>An uninterrupted 4-iteration GRPO run, the yardstick for the resumed one.</summary>
    private static readonly Lazy<string> Uninterrupted = new(() =>
    {
        var dir = Path.Combine(TestSupport.TempDir(), "full");
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Small(), TextWriter.Null);
        trainer.Train(dir);
        return dir;
    });

    [Fact]
    public void Grpo_InterruptThenResume_IdenticalMetricsCompletionsAndWeights_NoCriticSaved()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "interrupted");
        using var stop = StopSignal.Manual();
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new StopOnCall(stop, 3), Prompts, Small(), TextWriter.Null))
        {
            var e = Assert.Throws<TrainingStoppedException>(() => trainer.Train(dir, stop: stop));
            Assert.Contains("grpo: interrupted after iteration 3", e.Message);
        }
        Assert.Equal(3, Rows(dir).Count);
        Assert.Equal(3 * 32, File.ReadLines(Path.Combine(dir, PpoTrainer.CompletionsFile)).Count());
        Assert.False(File.Exists(Path.Combine(dir, "checkpoints", "step-000003", PpoTrainer.CriticFile)));
        // Checkpoint 2 is the one to resume from when 3 is lost: the redone iteration 3 must replace, not duplicate, its lines.
        Directory.Delete(Path.Combine(dir, "checkpoints", "step-000003"), recursive: true);
        File.WriteAllText(Path.Combine(dir, "checkpoints", "latest"), "step-000002");

        var log = new StringWriter();
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Small(), log))
            resumed.Train(dir, resume: true);
        Assert.Contains("grpo: resuming at iteration 3 of 4", log.ToString());

        var expected = Rows(Uninterrupted.Value);
        var actual = Rows(dir);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            foreach (var (key, value) in expected[i].Where(kv => !TestSupport.IsTiming(kv.Key)))
                Assert.True(actual[i].TryGetValue(key, out var other) && other.ToString() == value.ToString(), $"row {i + 1} '{key}': {value} vs {other}");
        Assert.Equal(File.ReadAllLines(Path.Combine(Uninterrupted.Value, PpoTrainer.CompletionsFile)), File.ReadAllLines(Path.Combine(dir, PpoTrainer.CompletionsFile)));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Uninterrupted.Value, "model.safetensors")), File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        Assert.False(Directory.Exists(Path.Combine(dir, RunDirectory.CriticFolder)));
        Assert.Empty(Directory.GetFiles(dir, PpoTrainer.CriticFile, SearchOption.AllDirectories));
    }

    [Fact]
    public void Cli_Grpo_MetricsHaveTrlKeys_CompletionsJsonlHasOneLinePerCompletion()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "cli");
        var (code, output, errors) = Run("grpo", "--data", PromptsFile, "--init", Init, "--reward", "exact-match,edit-distance:0.5", "--out", dir,
            "--set", "iterations=3", "--set", "batch_size=4", "--set", "num_generations=3", "--set", "num_mini_batches=2", "--set", "max_completion_length=8",
            "--set", "beta=0.04", "--set", "mask_truncated_completions=true", "--set", "dynamic_sampling=true", "--set", "epsilon_high=0.28");
        Assert.True(code == 0, errors);
        Assert.Contains("grpo: 3 iterations", output);

        var rows = Rows(dir);
        Assert.Equal(3, rows.Count);
        foreach (var key in new[] { "reward", "reward_mean", "reward_std", "rewards/exact-match/mean", "rewards/exact-match/std", "rewards/edit-distance/mean",
                     "rewards/edit-distance/std", "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio", "kl", "entropy",
                     "clip_ratio/low_mean", "clip_ratio/high_mean", "rollout_seconds", "generate_seconds", "update_seconds", "elapsed_seconds" })
            Assert.True(rows.All(r => r.ContainsKey(key)), key);
        Assert.DoesNotContain(rows, r => r.ContainsKey("value_loss"));
        foreach (var r in rows)
        {
            double total = r["rewards/exact-match/mean"].GetDouble() + 0.5 * r["rewards/edit-distance/mean"].GetDouble();
            Assert.Equal(total, r["reward"].GetDouble(), 4);
            Assert.InRange(r["kl"].GetDouble(), 0, 5);
        }

        var lines = File.ReadLines(Path.Combine(dir, PpoTrainer.CompletionsFile)).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3 * 4 * 3, lines.Count);
        foreach (var l in lines)
        {
            Assert.False(string.IsNullOrEmpty(l.GetProperty("prompt").GetString()));
            Assert.Equal(JsonValueKind.String, l.GetProperty("completion").ValueKind);
            var parts = l.GetProperty("rewards");
            Assert.Equal(parts.GetProperty("exact-match").GetDouble() + 0.5 * parts.GetProperty("edit-distance").GetDouble(), l.GetProperty("reward").GetDouble(), 4);
            Assert.True(l.TryGetProperty("advantage", out _));
        }
        foreach (var group in lines.GroupBy(l => (l.GetProperty("iteration").GetInt32(), l.GetProperty("group").GetInt32())))
        {
            Assert.Equal(3, group.Count());
            Assert.Single(group.Select(l => l.GetProperty("prompt").GetString()).Distinct());
        }
        var job = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, RunJob.FileName))).RootElement;
        Assert.Equal("grpo", job.GetProperty("command").GetString());
        Assert.Equal(3, job.GetProperty("config").GetProperty("num_generations").GetInt32());
        Assert.False(Directory.Exists(Path.Combine(dir, RunDirectory.CriticFolder)));
    }

    [Theory]
    [InlineData("rloo", "kl_coef=0.05")]
    [InlineData("reinforce++", "kl_coef=0.05")]
    [InlineData("reinforce++-baseline", "loss_type=dr_grpo")]
    [InlineData("grpo", "importance_sampling_level=sequence")]
    public void OtherEstimators_RunAndLogFiniteMetrics(string algo, string set)
    {
        var dir = Path.Combine(TestSupport.TempDir(), algo);
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Small($"algo={algo}", set, "iterations=2"), TextWriter.Null);
        var result = trainer.Train(dir);
        Assert.Equal(2, result.Iterations);
        Assert.All(Rows(dir), r => Assert.True(double.IsFinite(r["loss"].GetDouble()) && double.IsFinite(r["entropy"].GetDouble())));
        Assert.Equal(set.StartsWith("kl_coef"), Rows(dir)[0].ContainsKey("kl"));
    }

    [Fact]
    public void Grpo_EditDistance_RaisesSampledAndHeldOutReward_OnTheFlawedSortModel()
    {
        // As PpoTests: the SFT model imitated demonstrations of which 60% sort descending; the rule reward prefers ascending.
        // (Exact match barely moves on the tiny test model in so few iterations: its misses are mostly beyond its capacity.)
        var dir = Path.Combine(TestSupport.TempDir(), "learn");
        var config = Small("iterations=30", "batch_size=16", "num_generations=8", "num_mini_batches=2", "max_completion_length=10", "lr=1e-4", "checkpoint_every=100");
        using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, config, TextWriter.Null);
        var heldOut = Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.EvalFile)).Records;
        double before = Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, heldOut, new EditDistance(), 10).RewardMean;
        var result = trainer.Train(dir);
        double after = Evaluator.Evaluate(trainer.Actor, trainer.Tokenizer, heldOut, new EditDistance(), 10).RewardMean;
        var rewards = Rows(dir).Select(r => r["reward"].GetDouble()).ToList();
        double early = rewards.Take(5).Average(), late = rewards.TakeLast(5).Average();
        Assert.True(late > early + 0.1, $"sampled reward {early:F2} (first 5) -> {late:F2} (last 5): " + string.Join(" ", rewards.Select(r => r.ToString("F2"))));
        Assert.True(after > before + 0.1, $"held-out greedy reward {before:F3} -> {after:F3}");
        // The work done, counted: 30 iterations of 16 prompts x 8 completions (time belongs in `bench`, not in a test).
        Assert.Equal(30, result.Iterations);
        Assert.Equal(30 * 16 * 8, File.ReadLines(Path.Combine(dir, PpoTrainer.CompletionsFile)).Count());
        // The first minibatch of each iteration is scored by the policy that sampled it: its ratio is exactly 1 (up to
        // float noise of the same forward pass on another batch split); anything else means stale or misaligned log-probs.
        Assert.All(Rows(dir), r => Assert.Equal(1.0, r["first_ratio_mean"].GetDouble(), 4));
    }
}
