using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

public enum KlEstimator { K1, K3 }

/// <summary>Per-token estimators of KL(pi || pi_ref) from log-probabilities of the sampled tokens (Schulman, "Approximating KL divergence", 2020).</summary>
public static class Kl
{
    /// <summary>
    /// k1 = log pi - log pi_ref (unbiased, can be negative per token);
    /// k3 = (r - 1) - log r with r = pi_ref / pi (unbiased, always >= 0). logp, refLogp (B, T) -> (B, T).
    /// </summary>
    public static Tensor PerToken(Tensor logp, Tensor refLogp, KlEstimator estimator)
    {
        var logRatio = logp - refLogp;                       // log pi - log pi_ref
        return estimator switch
        {
            KlEstimator.K3 => (-logRatio).exp() - 1 + logRatio,
            _ => logRatio,
        };
    }
}

/// <summary>Per-sequence KL of sampled responses.</summary>
public static class SequenceKl
{
    /// <summary>Monte-Carlo KL(pi || pi_ref) of each sequence: sum over valid tokens of k1 = log pi - log pi_ref. (B, T) -> (B).</summary>
    public static Tensor Compute(Tensor logp, Tensor refLogp, Tensor mask) =>
        (Kl.PerToken(logp, refLogp, KlEstimator.K1) * mask.to(logp.dtype)).sum(1);
}

/// <summary>The KL coefficient beta: fixed, or adapted towards a target KL.</summary>
public sealed class KlController(double initial, double? target, double horizon)
{
    public double Value { get; private set; } = initial;

    /// <summary>
    /// Ziegler et al. 2019 (arXiv 1909.08593), adaptive KL: e = clip(KL / target - 1, -0.2, 0.2),
    /// beta &lt;- beta * (1 + e * n / horizon), after a batch of n samples with mean KL. No change when fixed (no target).
    /// </summary>
    public void Update(double kl, int n)
    {
        if (target is not double t) return;
        double error = Math.Clamp(kl / t - 1, -0.2, 0.2);
        Value *= 1 + error * n / horizon;
    }

    /// <summary>Restores the coefficient (resuming a run).</summary>
    public void Restore(double value) => Value = value;
}
