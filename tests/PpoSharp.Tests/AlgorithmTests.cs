using PpoSharp.Algorithms;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class AlgorithmTests
{
    private static Tensor T(params float[] x) => tensor(x).unsqueeze(0);                   // (1, T)
    private static Tensor M(params int[] x) => tensor(x.Select(v => v == 1).ToArray()).unsqueeze(0);
    private static float[] F(Tensor t) => t.to(ScalarType.Float32).flatten().data<float>().ToArray();

    private static void Close(float[] expected, float[] actual, double tol = 1e-5)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < tol, $"[{i}] expected {expected[i]}, got {actual[i]}");
    }

    [Fact]
    public void Gae_GammaLambdaOne_IsRewardToGoMinusValue()
    {
        // reward-to-go of [0, 0, 1] is [1, 1, 1]; minus V = [0.5, 0.2, 0.4]
        var (a, r) = Gae.Compute(T(0, 0, 1), T(0.5f, 0.2f, 0.4f), M(1, 1, 1), gamma: 1, lam: 1);
        Close([0.5f, 0.8f, 0.6f], F(a));
        Close([1, 1, 1], F(r));
    }

    [Fact]
    public void Gae_HandComputed_GammaLambda()
    {
        // delta2 = 1 - 0.4 = 0.6;  delta1 = 0.9*0.4 - 0.2 = 0.16;  delta0 = 0.9*0.2 - 0.5 = -0.32
        // A2 = 0.6;  A1 = 0.16 + 0.45*0.6 = 0.43;  A0 = -0.32 + 0.45*0.43 = -0.1265;  R = A + V
        var (a, r) = Gae.Compute(T(0, 0, 1), T(0.5f, 0.2f, 0.4f), M(1, 1, 1), gamma: 0.9, lam: 0.5);
        Close([-0.1265f, 0.43f, 0.6f], F(a));
        Close([0.3735f, 0.63f, 1.0f], F(r));
    }

    [Fact]
    public void Gae_ValuesAndRewardsAtMaskedPositions_DoNotChangeAdvantages()
    {
        var mask = M(1, 1, 0, 0);
        var (a1, _) = Gae.Compute(T(0, 1, 0, 0), T(0.3f, 0.1f, 0, 0), mask, 1, 0.95);
        var (a2, _) = Gae.Compute(T(0, 1, 5, -3), T(0.3f, 0.1f, 100, -7), mask, 1, 0.95);
        Close(F(a1), F(a2));
        Close([0.3f * -1 + 0.1f + 0.95f * 0.9f, 0.9f, 0, 0], F(a1));
    }

    [Fact]
    public void PolicyLoss_TakesClippedTermExactlyWhenItShould_BothSignsOfAdvantage()
    {
        // ratios 1.5, 0.5, 1.5, 0.5 with A = +1, -1, -1, +1 and eps = 0.2:
        // max(-A r, -A clip(r)) = max(-1.5, -1.2) = -1.2 (clipped), max(0.5, 0.8) = 0.8 (clipped),
        //                         max(1.5, 1.2) = 1.5, max(-0.5, -0.8) = -0.5;  mean = 0.15, clipfrac = 0.5
        var old = T(0, 0, 0, 0);
        var logp = T(MathF.Log(1.5f), MathF.Log(0.5f), MathF.Log(1.5f), MathF.Log(0.5f)).requires_grad_();
        var (loss, stats) = PolicyLoss.Compute(logp, old, T(1, -1, -1, 1), M(1, 1, 1, 1), new PolicyLossOptions(Epsilon: 0.2));
        Assert.Equal(0.15, loss.item<float>(), 5);
        Assert.Equal(0.5, stats.ClipFrac, 5);
        Assert.Equal(1.5, stats.RatioMax, 5);
        loss.backward();
        // clipped tokens get no gradient; d(-A r)/dlogp = -A r, over 4 tokens
        Close([0, 0, 1.5f / 4, -0.5f / 4], F(logp.grad!));
    }

    [Fact]
    public void PolicyLoss_EqualPolicies_RatioOneNoClipZeroApproxKl()
    {
        var logp = T(-1, -2, -0.5f);
        var (loss, stats) = PolicyLoss.Compute(logp, logp, T(1, 2, 3), M(1, 1, 0), new PolicyLossOptions(Epsilon: 0.2));
        Assert.Equal(-1.5, loss.item<float>(), 5);     // -(1 + 2) / 2
        Assert.Equal((1.0, 0.0, 0.0), (stats.RatioMean, stats.ClipFrac, stats.ApproxKl));
    }

    [Fact]
    public void ValueLoss_ClipsAroundOldValues()
    {
        // t0: V=1.0, old 0.5 -> clip 0.7; R 1.2: max(0.04, 0.25) = 0.25 (clipped)
        // t1: V=0.0, old 0.5 -> clip 0.3; R -1:  max(1.00, 1.69) = 1.69 (clipped)
        // t2: V=0.6, old 0.5 -> clip 0.6; R 0:   max(0.36, 0.36) = 0.36
        // loss = 0.5 * (0.25 + 1.69 + 0.36) / 3 = 0.383333; clipfrac = 2/3
        var (loss, clipFrac) = ValueLoss.Compute(T(1, 0, 0.6f, 9), T(0.5f, 0.5f, 0.5f, 9), T(1.2f, -1, 0, -9), M(1, 1, 1, 0), 0.2);
        Assert.Equal(0.383333, loss.item<float>(), 5);
        Assert.Equal(2.0 / 3, clipFrac, 5);
    }

    [Fact]
    public void ExplainedVariance_PerfectCriticIsOne_ConstantIsZero()
    {
        var returns = T(1, 2, 3, 4);
        Assert.Equal(1.0, ValueLoss.ExplainedVariance(returns, returns, M(1, 1, 1, 1)), 5);
        Assert.Equal(0.0, ValueLoss.ExplainedVariance(T(7, 7, 7, 7), returns, M(1, 1, 1, 1)), 5);
    }

    [Fact]
    public void Entropy_Uniform_IsLogV()
    {
        Assert.Equal(Math.Log(7), LogProbs.Entropy(zeros(1, 1, 7)).item<float>(), 5);
        Assert.Equal(0.0, LogProbs.Entropy(tensor(new float[] { 0, 100, 0 }).view(1, 1, 3)).item<float>(), 5);
    }

    [Fact]
    public void LogProbs_OfActions_GathersLogSoftmax()
    {
        var logits = tensor(new float[] { 0, MathF.Log(3) }).view(1, 1, 2);       // probabilities 1/4, 3/4
        Assert.Equal(Math.Log(0.75), LogProbs.OfActions(logits, tensor(new long[] { 1 }).view(1, 1)).item<float>(), 5);
    }

    [Fact]
    public void Kl_K1AndK3_OnKnownLogProbs()
    {
        // log pi = -1, log pi_ref = -1.5: k1 = 0.5;  k3 = exp(-0.5) - 1 + 0.5 = 0.1065307
        Assert.Equal(0.5, Kl.PerToken(T(-1), T(-1.5f), KlEstimator.K1).item<float>(), 5);
        Assert.Equal(0.1065307, Kl.PerToken(T(-1), T(-1.5f), KlEstimator.K3).item<float>(), 5);
        Assert.Equal(0.0, Kl.PerToken(T(-2), T(-2), KlEstimator.K3).item<float>(), 6);
    }

    [Fact]
    public void Whiten_IgnoresMaskedEntries()
    {
        // valid [1, 2, 3]: mean 2, unbiased variance 1 -> [-1, 0, 1]; the masked 1000 neither counts nor leaks
        Close([-1, 0, 1, 0], F(Masked.Whiten(T(1, 2, 3, 1000), M(1, 1, 1, 0))), 1e-4);
        Close([1, 2, 3, 0], F(Masked.Whiten(T(1, 2, 3, 1000), M(1, 1, 1, 0), shiftMean: false)), 1e-4);
    }

    [Fact]
    public void KlController_Adaptive_FollowsZieglerUpdate_FixedStays()
    {
        var adaptive = new KlController(0.1, target: 1, horizon: 100);
        adaptive.Update(kl: 1.5, n: 10);                  // e = clip(0.5) = 0.2 -> 0.1 * (1 + 0.2 * 10 / 100)
        Assert.Equal(0.102, adaptive.Value, 10);
        adaptive.Update(kl: 0.9, n: 10);                  // e = -0.1 -> * (1 - 0.01)
        Assert.Equal(0.102 * 0.99, adaptive.Value, 10);
        var fixedBeta = new KlController(0.1, target: null, horizon: 100);
        fixedBeta.Update(5, 10);
        Assert.Equal(0.1, fixedBeta.Value);
    }

    [Fact]
    public void RewardShaping_ScoreOnLastResponseToken_ForRowsOfDifferentLength()
    {
        // row 0 ended after 2 tokens (EOS), row 1 ran to the cap of 3 tokens (no EOS); beta = 0.5
        var kl = tensor(new float[] { 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f }, [2, 3]);
        var mask = tensor(new[] { true, true, false, true, true, true }, [2, 3]);
        var r = RewardShaping.Rewards(tensor(new float[] { 2, 3 }), kl, mask, beta: 0.5);
        Close([-0.05f, -0.1f + 2, 0, -0.2f, -0.25f, -0.3f + 3], F(r));
    }

    [Fact]
    public void SequenceKl_SumsK1OverValidTokensOnly()
    {
        // k1 = (-1 + 1.5) + (-2 + 2) = 0.5 over the two valid tokens; the masked third (-3 vs -1) does not count
        Close([0.5f], F(SequenceKl.Compute(T(-1, -2, -3), T(-1.5f, -2, -1), M(1, 1, 0))));
    }

    [Fact]
    public void EndedWithEos_CountsEosInsideTheMaskOnly()
    {
        var responses = tensor(new long[] { 5, 9, 0, 5, 5, 5, 5, 0, 9 }, [3, 3]);
        var mask = tensor(new[] { true, true, false, true, true, true, true, false, false }, [3, 3]);
        Assert.Equal(new[] { true, false, false }, Models.Sampling.EndedWithEos(responses, mask, eos: [9]).data<bool>().ToArray());
    }
}
