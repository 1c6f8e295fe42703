using PpoSharp.Algorithms;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>Critic-free advantage estimators (GRPO, Dr. GRPO, RLOO, REINFORCE++) and the shared clipped policy loss, on hand-computed numbers.</summary>
public class AdvantageTests
{
    private static Tensor V(params float[] x) => tensor(x);                                       // (B)
    private static Tensor Rows(int t, params float[] x) => tensor(x).view(-1, t);                  // (B, T)
    private static Tensor Mask(int t, params int[] x) => tensor(x.Select(v => v == 1).ToArray()).view(-1, t);
    private static float[] F(Tensor t) => t.to(ScalarType.Float32).flatten().data<float>().ToArray();

    private static void Close(float[] expected, float[] actual, double tol = 1e-5)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < tol, $"[{i}] expected {expected[i]}, got {actual[i]}");
    }

    // ---- GRPO / Dr. GRPO / RLOO: two prompts x three completions, rewards [1, 2, 3 | 0, 0, 3] ----

    [Fact]
    public void Grpo_GroupScaling_DividesByUnbiasedGroupStdPlusEpsilon()
    {
        // group 1: mean 2, deviations [-1, 0, 1], std = sqrt((1 + 0 + 1) / 2) = 1        -> [-1, 0, 1] / 1.0001
        // group 2: mean 1, deviations [-1, -1, 2], std = sqrt((1 + 1 + 4) / 2) = sqrt 3  -> [-1, -1, 2] / (1.7320508 + 1e-4)
        var a = GroupAdvantages.Grpo(V(1, 2, 3, 0, 0, 3), numGenerations: 3);
        Close([-0.99990001f, 0, 0.99990001f, -0.57731694f, -0.57731694f, 1.15463388f], F(a));
    }

    [Fact]
    public void Grpo_BatchScaling_DividesByStdOfAllRewards()
    {
        // batch mean 1.5; squared deviations .25 .25 2.25 2.25 2.25 2.25 = 9.5; std = sqrt(9.5 / 5) = 1.3784049
        // group-centred [-1, 0, 1, -1, -1, 2] / (1.3784049 + 1e-4)
        var a = GroupAdvantages.Grpo(V(1, 2, 3, 0, 0, 3), 3, RewardScaling.Batch);
        Close([-0.72542362f, 0, 0.72542362f, -0.72542362f, -0.72542362f, 1.45084724f], F(a));
    }

    [Fact]
    public void Grpo_NoScaling_IsDrGrpo_GroupCentredOnly()
    {
        Close([-1, 0, 1, -1, -1, 2], F(GroupAdvantages.Grpo(V(1, 2, 3, 0, 0, 3), 3, RewardScaling.None)));
    }

    [Theory]
    [InlineData(RewardScaling.Group)]
    [InlineData(RewardScaling.Batch)]
    [InlineData(RewardScaling.None)]
    public void Grpo_GroupOfIdenticalRewards_HasExactlyZeroAdvantage(RewardScaling scaling)
    {
        // in float32, (0.9f + 0.9f + 0.9f) / 3 is 0.9f - 6e-8 and 0.45f's mean is 3e-8 off: without the explicit rule the
        // first group would get 6e-8 / 1e-4 instead of 0
        var a = F(GroupAdvantages.Grpo(V(0.9f, 0.9f, 0.9f, 1, 2, 3, 0.45f, 0.45f, 0.45f), 3, scaling));
        Assert.Equal(new float[] { 0, 0, 0, 0, 0, 0 }, a[..3].Concat(a[6..]).ToArray());
        Assert.True(a[3] < 0 && a[5] > 0);
    }

    [Fact]
    public void Rloo_SubtractsTheMeanOfTheOtherCompletions()
    {
        // [1, 2, 6]: 1 - (2 + 6)/2 = -3;  2 - (1 + 6)/2 = -1.5;  6 - (1 + 2)/2 = 4.5;  identical group [4, 4, 4] -> 0
        Close([-3, -1.5f, 4.5f, 0, 0, 0], F(GroupAdvantages.Rloo(V(1, 2, 6, 4, 4, 4), 3)));
        // G = 2: each is the difference to its sibling
        Close([-2, 2], F(GroupAdvantages.Rloo(V(1, 3), 2)));
    }

    [Fact]
    public void GroupEstimators_RefuseOneGenerationPerPrompt_AndBatchesOfPartialGroups()
    {
        var grpo = Assert.Throws<PpoSharpException>(() => GroupAdvantages.Grpo(V(1, 2), 1));
        Assert.Contains("num_generations must be at least 2 for grpo", grpo.Message);
        var rloo = Assert.Throws<PpoSharpException>(() => GroupAdvantages.Rloo(V(1, 2), 1));
        Assert.Contains("num_generations must be at least 2 for rloo", rloo.Message);
        var baseline = Assert.Throws<PpoSharpException>(() => ReinforcePlusPlus.ComputeBaseline(V(1), Rows(1, 0), Mask(1, 1), 0.1, 1));
        Assert.Contains("num_generations must be at least 2 for reinforce_baseline", baseline.Message);
        Assert.Contains("not a whole number of groups", Assert.Throws<PpoSharpException>(() => GroupAdvantages.Grpo(V(1, 2, 3), 2)).Message);
    }

    [Fact]
    public void ToTokens_BroadcastsOverResponseTokens_ZeroAtPadding()
    {
        Close([2, 2, 0, -1, 0, 0], F(GroupAdvantages.ToTokens(V(2, -1), Mask(3, 1, 1, 0, 1, 0, 0))));
    }

    // ---- REINFORCE++ ----

    [Fact]
    public void DiscountedReturns_HandComputed()
    {
        // gamma 0.5: [0, 0, 1] -> [0.25, 0.5, 1];  [2, pad, pad] -> [2, 0, 0]
        Close([0.25f, 0.5f, 1, 2, 0, 0], F(ReinforcePlusPlus.DiscountedReturns(Rows(3, 0, 0, 1, 2, 7, -5), Mask(3, 1, 1, 1, 1, 0, 0), 0.5)));
    }

    [Fact]
    public void Reinforce_FromTokenRewards_WhitensReturnsOverValidTokens_PaddingCannotChangeThem()
    {
        // gamma 1: returns [1, 1, 1] and [2]; valid mean 1.25, unbiased var (3 * 0.0625 + 0.5625) / 3 = 0.25 -> std 0.5
        // advantages (G - 1.25) / 0.5 = [-0.5, -0.5, -0.5, 1.5]
        var mask = Mask(3, 1, 1, 1, 1, 0, 0);
        var (a1, g1) = ReinforcePlusPlus.FromTokenRewards(Rows(3, 0, 0, 1, 2, 0, 0), mask);
        var (a2, g2) = ReinforcePlusPlus.FromTokenRewards(Rows(3, 0, 0, 1, 2, 100, -50), mask);
        Close([-0.5f, -0.5f, -0.5f, 1.5f, 0, 0], F(a1), 1e-4);
        Close([1, 1, 1, 2, 0, 0], F(g1));
        Close(F(a1), F(a2));
        Close(F(g1), F(g2));
    }

    [Fact]
    public void Reinforce_FromScoresAndKl_PutsScoreOnLastTokenAndKlPenaltyOnEach()
    {
        // klCoef 0.5, scores [1, 2]: rewards [-0.05, -0.1, -0.15 + 1] and [-0.2 + 2]; returns [0.7, 0.75, 0.85] and [1.8]
        // mean 4.1 / 4 = 1.025; deviations -0.325 -0.275 -0.175 0.775; var 0.8125 / 3 = 0.2708333; std 0.5204165
        var mask = Mask(3, 1, 1, 1, 1, 0, 0);
        var (a, g) = ReinforcePlusPlus.Compute(V(1, 2), Rows(3, 0.1f, 0.2f, 0.3f, 0.4f, 0, 0), mask, klCoef: 0.5);
        Close([0.7f, 0.75f, 0.85f, 1.8f, 0, 0], F(g));
        Close([-0.62449979f, -0.52842290f, -0.33626912f, 1.48919180f, 0, 0], F(a), 1e-4);
        var (aPadded, _) = ReinforcePlusPlus.Compute(V(1, 2), Rows(3, 0.1f, 0.2f, 0.3f, 0.4f, 9, -9), mask, klCoef: 0.5);
        Close(F(a), F(aPadded));
    }

    [Fact]
    public void ReinforceBaseline_CentresScoresOnGroupMean_ThenWhitens()
    {
        // one prompt, G = 2, scores [1, 3] -> centred [-1, 1]; no KL; returns [-1, -1] (2 tokens) and [1, 1, 1]
        // valid mean 0.2; var (2 * 1.44 + 3 * 0.64) / 4 = 1.2; std 1.0954451 -> [-1.0954451, 0.7302967]
        var mask = Mask(3, 1, 1, 0, 1, 1, 1);
        var (a, g) = ReinforcePlusPlus.ComputeBaseline(V(1, 3), zeros(2, 3), mask, klCoef: 0.1, numGenerations: 2);
        Close([-1, -1, 0, 1, 1, 1], F(g));
        Close([-1.0954451f, -1.0954451f, 0, 0.7302967f, 0.7302967f, 0.7302967f], F(a), 1e-4);
        var (aPadded, _) = ReinforcePlusPlus.ComputeBaseline(V(1, 3), Rows(3, 0, 0, 42, 0, 0, 0), mask, 0.1, 2);
        Close(F(a), F(aPadded));
    }

    // ---- the clipped policy loss ----

    [Theory]
    [InlineData(LossAggregation.Dapo, null, -2.25)]      // sum -9 over 4 valid tokens
    [InlineData(LossAggregation.Bnpo, null, -2.25)]
    [InlineData(LossAggregation.Grpo, null, -2.5)]       // row means -3 and -6/3 = -2 -> -2.5
    [InlineData(LossAggregation.DrGrpo, null, -0.9)]     // -9 / (B = 2 x max_completion_length 5)
    [InlineData(LossAggregation.Dapo, 9.0, -1.0)]        // -9 / 9 tokens of the whole accumulated batch
    public void PolicyLoss_Aggregation_Modes(LossAggregation aggregation, double? batchTokens, double expected)
    {
        // equal policies (ratio 1), so l_t = -A_t: row 0 has one token (A 3), row 1 three (A 1, 2, 3); padding holds 100
        var logp = zeros(2, 4);
        var advantages = Rows(4, 3, 100, 100, 100, 1, 2, 3, 100);
        var options = new PolicyLossOptions(Aggregation: aggregation, MaxCompletionLength: 5);
        var (loss, _) = PolicyLoss.Compute(logp, logp, advantages, Mask(4, 1, 0, 0, 0, 1, 1, 1, 0), options, batchTokenCount: batchTokens);
        Assert.Equal(expected, loss.item<float>(), 5);
    }

    [Fact]
    public void PolicyLoss_ClipHigher_IsAsymmetric()
    {
        // eps 0.2, eps_high 0.28:  r 1.25 A+ -> -1.25 (inside 1.28);  r 1.3 A+ -> -1.28 (high clip);
        //                          r 0.75 A- -> max(0.75, 0.8) = 0.8 (low clip);  r 0.85 A- -> 0.85;  mean -0.88 / 4 = -0.22
        // symmetric eps 0.2: r 1.25 is clipped too -> (-1.2 - 1.2 + 0.8 + 0.85) / 4 = -0.1875
        var logp = Rows(4, MathF.Log(1.25f), MathF.Log(1.3f), MathF.Log(0.75f), MathF.Log(0.85f));
        var advantages = Rows(4, 1, 1, -1, -1);
        var mask = Mask(4, 1, 1, 1, 1);
        var (higher, s) = PolicyLoss.Compute(logp, zeros(1, 4), advantages, mask, new PolicyLossOptions(0.2, EpsilonHigh: 0.28));
        Assert.Equal(-0.22, higher.item<float>(), 5);
        Assert.Equal((0.25, 0.25, 0.5), (s.ClipRatioLow, s.ClipRatioHigh, s.ClipFrac));
        var (symmetric, s2) = PolicyLoss.Compute(logp, zeros(1, 4), advantages, mask, new PolicyLossOptions(0.2));
        Assert.Equal(-0.1875, symmetric.item<float>(), 5);
        Assert.Equal((0.25, 0.5, 0.75), (s2.ClipRatioLow, s2.ClipRatioHigh, s2.ClipFrac));
    }

    [Fact]
    public void PolicyLoss_DualClip_BoundsNegativeAdvantageLossByCTimesAbsA()
    {
        // c = 3, eps 0.2:  r 5 A -1 -> min(max(5, 1.2), 3) = 3 (dual clip, no gradient);  r 2 A -1 -> min(2, 3) = 2;
        //                  r 5 A +1 -> max(-5, -1.2) = -1.2 (clipped; dual clip is for A < 0 only);  mean 3.8 / 3
        var logp = Rows(3, MathF.Log(5), MathF.Log(2), MathF.Log(5)).requires_grad_();
        var (loss, s) = PolicyLoss.Compute(logp, zeros(1, 3), Rows(3, -1, -1, 1), Mask(3, 1, 1, 1), new PolicyLossOptions(0.2, DualClip: 3));
        Assert.Equal(3.8 / 3, loss.item<float>(), 5);
        Assert.Equal(1.0 / 3, s.DualClipFrac, 5);
        loss.backward();
        Close([0, 2f / 3, 0], F(logp.grad!));          // d(-A r)/dlogp = -A r = 2, over 3 tokens
        var (noDual, _) = PolicyLoss.Compute(logp.detach(), zeros(1, 3), Rows(3, -1, -1, 1), Mask(3, 1, 1, 1), new PolicyLossOptions(0.2));
        Assert.Equal((5 + 2 - 1.2) / 3, noDual.item<float>(), 5);
    }

    [Fact]
    public void PolicyLoss_SequenceRatio_IsExpOfMeanTokenLogRatio()
    {
        // token log-ratios [0.3, -0.3, pad 5]. Token level, A = +1: r 1.3498588 -> clipped -1.2; r 0.7408182 -> -0.7408182;
        // mean -0.9704091. Sequence level: exp((0.3 - 0.3) / 2) = 1 for both tokens -> loss -1, nothing clipped.
        var logp = Rows(3, 0.3f, -0.3f, 5).requires_grad_();
        var mask = Mask(3, 1, 1, 0);
        var (tokenLoss, _) = PolicyLoss.Compute(logp, zeros(1, 3), V(1), mask, new PolicyLossOptions());
        Assert.Equal(-0.9704091, tokenLoss.item<float>(), 5);
        var (seqLoss, s) = PolicyLoss.Compute(logp, zeros(1, 3), V(1), mask, new PolicyLossOptions(Level: RatioLevel.Sequence));
        Assert.Equal(-1.0, seqLoss.item<float>(), 5);
        Assert.Equal((1.0, 1.0, 0.0), (s.RatioMean, s.RatioMax, s.ClipFrac));
        seqLoss.backward();
        // loss = -(1/2) (r + r), r = exp((lp0 + lp1) / 2): d/dlp_t = -r / 2 = -0.5 for valid tokens, 0 for padding
        Close([-0.5f, -0.5f, 0], F(logp.grad!));
    }

    [Fact]
    public void PolicyLoss_SequenceRatio_SharedByTheRow()
    {
        // row log-ratios [0.2, -0.1] -> exp(0.05) = 1.0512711 for both tokens; A = +1, no clip -> loss -1.0512711
        var (loss, s) = PolicyLoss.Compute(Rows(2, 0.2f, -0.1f), zeros(1, 2), V(1), Mask(2, 1, 1), new PolicyLossOptions(Level: RatioLevel.Sequence));
        Assert.Equal(-1.0512711, loss.item<float>(), 5);
        Assert.Equal(1.0512711, s.RatioMax, 5);
    }

    [Fact]
    public void PolicyLoss_BetaAddsK3KlToEveryToken()
    {
        // ratio 1 and A = 0, so only the KL term: log pi = -1, log pi_ref = -1.5 -> k3 = exp(-0.5) - 1 + 0.5 = 0.1065307
        var logp = Rows(2, -1, -1);
        var options = new PolicyLossOptions(Beta: 0.1);
        var (loss, s) = PolicyLoss.Compute(logp, logp, V(0), Mask(2, 1, 1), options, refLogp: Rows(2, -1.5f, -1.5f));
        Assert.Equal(0.01065307, loss.item<float>(), 6);
        Assert.Equal(0.1065307, s.Kl!.Value, 5);
        Assert.Null(PolicyLoss.Compute(logp, logp, V(0), Mask(2, 1, 1), new PolicyLossOptions()).Stats.Kl);
        Assert.Contains("refLogp", Assert.Throws<PpoSharpException>(() => PolicyLoss.Compute(logp, logp, V(0), Mask(2, 1, 1), options)).Message);
    }

    [Fact]
    public void PolicyLossOptions_RejectBadSettings_AndParseConfigNames()
    {
        Assert.Contains("max_completion_length", Assert.Throws<PpoSharpException>(() => new PolicyLossOptions(Aggregation: LossAggregation.DrGrpo).Validate()).Message);
        Assert.Contains("dual_clip must be > 1", Assert.Throws<PpoSharpException>(() => new PolicyLossOptions(DualClip: 1).Validate()).Message);
        Assert.Equal(0.28, new PolicyLossOptions(0.2, 0.28).High);
        Assert.Equal(0.2, new PolicyLossOptions(0.2).High);

        Assert.Equal(LossAggregation.DrGrpo, OptionNames.Parse<LossAggregation>("loss_type", "dr_grpo"));
        Assert.Equal(RatioLevel.Sequence, OptionNames.Parse<RatioLevel>("importance_sampling_level", "sequence"));
        Assert.Equal(RewardScaling.None, OptionNames.Parse<RewardScaling>("scale_rewards", "none"));
        Assert.Equal(AdvantageEstimator.ReinforceBaseline, OptionNames.Parse<AdvantageEstimator>("advantage_estimator", "reinforce_baseline"));
        var e = Assert.Throws<PpoSharpException>(() => OptionNames.Parse<LossAggregation>("loss_type", "ppo"));
        Assert.Equal("loss_type: 'ppo' is not supported (allowed: grpo, bnpo, dr_grpo, dapo)", e.Message);
    }
}
