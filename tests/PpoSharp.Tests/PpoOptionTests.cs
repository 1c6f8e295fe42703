using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The same score for every response (so that the options' effects on scores can be computed by hand).</summary>
internal sealed class ConstantReward(double value) : IRewardFunction
{
    public string Name => "constant";
    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batch.Select(_ => value).ToList();
}

/// <summary>Each documented PPO/GRPO option, through the trainer's phases, with a test that fails if the option does nothing.</summary>
public class PpoOptionTests
{
    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");
    private static IReadOnlyList<PromptRecord> Prompts => Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records;

    private static PpoTrainer Ppo(IRewardFunction reward, params string[] sets) => PpoTrainer.FromRunDirectory(Init, reward, Prompts,
        ConfigLoader.Load(new PpoConfig(), null, ["batch_size=8", "num_mini_batches=1", "num_ppo_epochs=1", "response_length=6", "lr=3e-3", .. sets], c => c.Validate()), TextWriter.Null);

    private static PpoTrainer Grpo(IRewardFunction reward, params string[] sets) => PpoTrainer.FromRunDirectory(Init, reward, Prompts,
        ConfigLoader.Load(new GrpoConfig(), null, ["batch_size=4", "num_generations=4", "num_mini_batches=1", "max_completion_length=6", "lr=3e-3", .. sets], c => c.Validate()), TextWriter.Null);

    private static float[] Floats(Tensor t) => t.to_type(ScalarType.Float32).cpu().data<float>().ToArray();

    [Fact]
    public void ScoreClip_ClampsTheRewardScores()
    {
        // A constant reward 5: with score_clip 2 every score is min(5, 2) = 2; without it 5.
        using var clipped = Ppo(new ConstantReward(5), "score_clip=2");
        using var e = clipped.CollectRollouts(clipped.NextRolloutBatch());
        Assert.All(Floats(e.Scores), s => Assert.Equal(2f, s));
        using var plain = Ppo(new ConstantReward(5));
        using var f = plain.CollectRollouts(plain.NextRolloutBatch());
        Assert.All(Floats(f.Scores), s => Assert.Equal(5f, s));
    }

    [Fact]
    public void MissingEosPenalty_SubtractedFromResponsesWithoutEos_Only()
    {
        // response_length 2 cuts most sort answers short: score = 0 - 0.7 where the response has no EOS, 0 where it has.
        using var trainer = Ppo(new ConstantReward(0), "missing_eos_penalty=0.7", "response_length=2");
        using var e = trainer.CollectRollouts(trainer.NextRolloutBatch());
        var truncated = e.Truncated!.cpu().data<bool>().ToArray();
        Assert.Contains(true, truncated);
        Assert.Equal(truncated.Select(t => t ? -0.7f : 0f).ToArray(), Floats(e.Scores));
    }

    [Fact]
    public void WhitenRewards_ScalesPerTokenRewardsToUnitVariance_WithoutShiftingTheMean()
    {
        // Masked.Whiten(shiftMean: false): (r - mean) * rsqrt(var(r) + 1e-8) + mean over response tokens, so the masked
        // variance becomes 1 (up to the 1e-8) and the mean is kept; without the option it is that of score-at-EOS + KL terms.
        using var trainer = Ppo(new EditDistance(), "whiten_rewards=true");
        using var e = trainer.ComputeAdvantages(trainer.CollectRollouts(trainer.NextRolloutBatch()));
        var mask = e.ResponseMask;
        double variance = Masked.Var(e.Rewards!, mask).item<float>();
        Assert.Equal(1.0, variance, 3);

        using var plain = Ppo(new EditDistance());
        using var f = plain.ComputeAdvantages(plain.CollectRollouts(plain.NextRolloutBatch()));
        Assert.NotEqual(1.0, Masked.Var(f.Rewards!, f.ResponseMask).item<float>(), 2);
        // Same seed, same rollouts: the whitened rewards are the plain ones standardised, their mean added back.
        var mean = Masked.Mean(f.Rewards!, f.ResponseMask);
        var expected = (f.Rewards! - mean) * (Masked.Var(f.Rewards!, f.ResponseMask) + 1e-8).rsqrt() + mean;
        Assert.True(expected.masked_select(mask).allclose(e.Rewards!.masked_select(mask), rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void OwnBackboneCritic_IsClippedApartFromTheActor_AndNoGradientOutlivesItsStep()
    {
        // max_grad_norm 1e-4 clips every step. The actor's gradient is clipped on its own, so vf_coef 1 and vf_coef 1e4
        // (a critic gradient 1e4 times larger) leave the same actor. Clipped jointly, the critic's norm would scale the
        // actor's gradient down about 1e4 times, below AdamW's eps, and its step with it.
        var weights = new List<float[]>[2];
        foreach (var (vf, k) in new[] { ("1", 0), ("1e4", 1) })
        {
            using var trainer = Ppo(new EditDistance(), "max_grad_norm=1e-4", $"vf_coef={vf}");
            var critic = trainer.Critic!.parameters().Select(q => Floats(q)).ToList();
            var stats = trainer.Update(trainer.ComputeAdvantages(trainer.CollectRollouts(trainer.NextRolloutBatch())));
            Assert.True(stats.GradNorm > 1e-4);
            Assert.All(trainer.Actor.parameters().Concat(trainer.Critic!.parameters()), q => Assert.True(q.grad is null));   // set to none
            weights[k] = trainer.Actor.parameters().Select(q => Floats(q)).ToList();
            var after = trainer.Critic.parameters().Select(q => Floats(q)).ToList();
            Assert.Contains(Enumerable.Range(0, after.Count), i => !after[i].SequenceEqual(critic[i]));           // the critic stepped too
        }
        using var initial = RunDirectory.LoadPolicyModel(Init);
        var before = initial.parameters().Select(q => Floats(q)).ToList();
        Assert.Contains(Enumerable.Range(0, before.Count), i => !before[i].SequenceEqual(weights[0][i]));      // the actor moved
        for (int i = 0; i < weights[0].Count; i++) Assert.Equal(weights[0][i], weights[1][i]);
    }

    [Fact]
    public void TargetKl_StopsTheEpochsOnceTheirKlExceedsIt()
    {
        // 4 epochs of one minibatch each. Epoch 1 scores its minibatch before its only step, with the policy that sampled
        // it: ratio 1, approximate KL 0, not above 1e-9. Epoch 2 scores it after one step at lr 3e-3: KL far above 1e-9,
        // so target_kl 1e-9 stops after epoch 2; without it all 4 run.
        using var limited = Ppo(new EditDistance(), "num_ppo_epochs=4", "target_kl=1e-9");
        var stats = limited.Update(limited.ComputeAdvantages(limited.CollectRollouts(limited.NextRolloutBatch())));
        Assert.Equal(2, stats.Epochs);
        using var free = Ppo(new EditDistance(), "num_ppo_epochs=4");
        Assert.Equal(4, free.Update(free.ComputeAdvantages(free.CollectRollouts(free.NextRolloutBatch()))).Epochs);
    }

    [Fact]
    public void AdaptiveKl_DefaultsOnForAModelReward_OffForARule()
    {
        // adaptive_kl unset: beta adapts (Ziegler's controller moves it after each iteration) only when a reward model scores.
        var (policy, tokenizer) = RunDirectory.LoadPolicy(Init);
        manual_seed(5);
        var scorer = new RewardModelScorer([new RewardModel(policy)], tokenizer, Init);
        using var withModel = Ppo(scorer, "kl_coef=0.05");
        withModel.Iteration(1);
        Assert.NotEqual(0.05, withModel.KlCoef);
        using var withRule = Ppo(new EditDistance(), "kl_coef=0.05");
        withRule.Iteration(1);
        Assert.Equal(0.05, withRule.KlCoef);
        using var forced = Ppo(new EditDistance(), "kl_coef=0.05", "adaptive_kl=true");
        forced.Iteration(1);
        Assert.NotEqual(0.05, forced.KlCoef);
    }

    [Fact]
    public void DynamicSampling_DropsGroupsWhoseRewardsAreAllEqual()
    {
        // A constant reward: every group of 4 is flat (no signal), so dynamic sampling trains on 0 of the 16 sequences.
        using var dynamic = Grpo(new ConstantReward(1), "dynamic_sampling=true");
        var stats = dynamic.Update(dynamic.ComputeAdvantages(dynamic.CollectRollouts(dynamic.NextRolloutBatch())));
        Assert.Equal(0, stats.Sequences);
        using var all = Grpo(new ConstantReward(1));
        Assert.Equal(16, all.Update(all.ComputeAdvantages(all.CollectRollouts(all.NextRolloutBatch()))).Sequences);
    }

    [Fact]
    public void MaskTruncatedCompletions_LeavesTheTokensOfTruncatedCompletionsOutOfTheLoss()
    {
        // max_completion_length 2 cuts most answers short: the loss mask is the response mask with the rows of truncated
        // completions (no EOS) cleared; without the option there is no loss mask (every response token counts).
        using var masked = Grpo(new EditDistance(), "mask_truncated_completions=true", "max_completion_length=2");
        using var e = masked.ComputeAdvantages(masked.CollectRollouts(masked.NextRolloutBatch()));
        var truncated = e.Truncated!.cpu().data<bool>().ToArray();
        Assert.Contains(true, truncated);
        var expected = e.ResponseMask.logical_and(e.Truncated!.logical_not().unsqueeze(1));   // (B, N)
        Assert.True(e.LossMask!.eq(expected).all().item<bool>());
        Assert.All(Enumerable.Range(0, truncated.Length).Where(i => truncated[i]), i => Assert.False(e.LossMask![i].any().item<bool>()));

        using var plain = Grpo(new EditDistance(), "max_completion_length=2");
        using var f = plain.ComputeAdvantages(plain.CollectRollouts(plain.NextRolloutBatch()));
        Assert.Null(f.LossMask);
    }

    [Fact]
    public void KlToReference_ZeroForTheSameModel_MatchesHandSummedLogProbsForAnother()
    {
        // One prompt, so no padding: KL = sum over the sampled response's tokens of log pi(a_t) - log pi_ref(a_t), the
        // response drawn with the same generator seed as KlToReference draws it.
        var (policy, tokenizer) = RunDirectory.LoadPolicy(Init);
        var reference = TestSupport.TinyModel(vocab: tokenizer.VocabSize, seed: 9, context: policy.Config.ContextLength);
        var prompt = Prompts.Take(1).ToList();
        Assert.Equal(0.0, Evaluator.KlToReference(policy, policy, tokenizer, prompt, 8, new Generator(3)), 6);
        double kl = Evaluator.KlToReference(policy, reference, tokenizer, prompt, 8, new Generator(3));

        var ids = tensor(Evaluator.EncodePrompts(tokenizer, prompt)[0].Select(i => (long)i).ToArray()).unsqueeze(0);   // (1, P)
        var g = Sampling.Generate(policy, ids, ones_like(ids).to_type(ScalarType.Bool), new SamplingOptions(8), tokenizer.Special, new Generator(3));
        var sequence = cat([ids, g.Responses], 1);                                                             // (1, P+N)
        int p = (int)ids.shape[1], n = (int)g.Responses.shape[1];
        var taken = g.Responses[0].data<long>().ToArray();
        var real = g.Mask[0].data<bool>().ToArray();
        double LogProb(Decoder m, int t)
        {
            using var noGrad = no_grad();
            var logp = nn.functional.log_softmax(m.forward(sequence.narrow(1, 0, p + t)), -1);               // (1, p+t, V)
            return logp[0, p + t - 1, taken[t]].item<float>();
        }
        double expected = Enumerable.Range(0, n).Where(t => real[t]).Sum(t => LogProb(policy, t) - LogProb(reference, t));
        Assert.Equal(expected, kl, 3);
        Assert.True(Math.Abs(kl) > 0.01, $"KL {kl} between two different models");
    }
}
