using PpoSharp.Algorithms;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The shared clipped policy loss, on hand-computed numbers.</summary>
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
        var e = Assert.Throws<PpoSharpException>(() => OptionNames.Parse<LossAggregation>("loss_type", "ppo"));
        Assert.Equal("loss_type: 'ppo' is not supported (allowed: grpo, bnpo, dr_grpo, dapo)", e.Message);
    }
}
