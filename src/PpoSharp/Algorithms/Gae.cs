using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Generalized Advantage Estimation (Schulman et al. 2015, arXiv 1506.02438).</summary>
public static class Gae
{
    /// <summary>
    /// delta_t = r_t + gamma V(s_{t+1}) - V(s_t);  A_t = sum_l (gamma lambda)^l delta_{t+l} = delta_t + gamma lambda A_{t+1};
    /// returns R_t = A_t + V(s_t). The value after the last response token is 0 (the episode ends). Values and
    /// rewards at masked positions are zeroed first, so whatever they hold cannot change the advantages.
    /// rewards, values, mask (B, T) -> advantages (B, T), returns (B, T).
    /// <code>
    /// for t = T-1 .. 0:  lastgaelam = r[t] + gamma * V[t+1] - V[t] + gamma * lam * lastgaelam;  A[t] = lastgaelam
    /// </code>
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) Compute(Tensor rewards, Tensor values, Tensor mask, double gamma, double lam)
    {
        using var scope = NewDisposeScope();
        var m = mask.to(values.dtype);
        var v = values * m;                                   // (B, T)
        var r = rewards * m;                                  // (B, T)
        long t = v.shape[1];
        var advantages = new Tensor[t];
        var lastgaelam = zeros_like(v.select(1, 0));          // (B)
        for (long i = t - 1; i >= 0; i--)
        {
            var nextValue = i + 1 < t ? v.select(1, i + 1) : zeros_like(lastgaelam);
            var delta = r.select(1, i) + gamma * nextValue - v.select(1, i);
            lastgaelam = delta + gamma * lam * lastgaelam;
            advantages[i] = lastgaelam;
        }
        var a = stack(advantages, 1) * m;                     // (B, T)
        var returns = a + v;                                  // (B, T)
        return (a.MoveToOuterDisposeScope(), returns.MoveToOuterDisposeScope());
    }
}
