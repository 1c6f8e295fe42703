using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Diagnostics of one policy-loss evaluation (CleanRL's names).</summary>
public sealed record PolicyLossStats(double ApproxKl, double ClipFrac, double RatioMean, double RatioMax);

/// <summary>PPO's clipped surrogate objective (Schulman et al. 2017, arXiv 1707.06347).</summary>
public static class PolicyLoss
{
    /// <summary>
    /// ratio r_t = exp(log pi - log pi_old); L^CLIP = E_t[min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)].
    /// Returned as a loss to minimise: mean over valid tokens of max(-A r, -A clip(r)).
    /// clipfrac = share of tokens where the clipped term is taken; approx_kl = E[(r - 1) - log r] (k3).
    /// logp, oldLogp, advantages, mask (B, T).
    /// </summary>
    public static (Tensor Loss, PolicyLossStats Stats) Compute(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask, double cliprange)
    {
        using var scope = NewDisposeScope();
        var logRatio = logp - oldLogp;                                              // (B, T)
        var ratio = logRatio.exp();
        var pgLoss1 = -advantages * ratio;
        var pgLoss2 = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange);
        var loss = Masked.Mean(maximum(pgLoss1, pgLoss2), mask);
        using var noGrad = no_grad();
        var stats = new PolicyLossStats(
            ApproxKl: Masked.Mean(ratio - 1 - logRatio, mask).item<float>(),
            ClipFrac: Masked.Mean(pgLoss2.gt(pgLoss1).to(ratio.dtype), mask).item<float>(),
            RatioMean: Masked.Mean(ratio, mask).item<float>(),
            RatioMax: ratio.masked_fill(mask.logical_not(), 0).max().item<float>());
        return (loss.MoveToOuterDisposeScope(), stats);
    }
}
