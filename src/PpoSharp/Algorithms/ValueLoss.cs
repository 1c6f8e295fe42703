using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>The critic's clipped value regression.</summary>
public static class ValueLoss
{
    /// <summary>
    /// The notes' L^value = 1/2 (V(s_t) - R_t)^2, with PPO's value clipping:
    /// V_clip = V_old + clip(V - V_old, -eps_v, eps_v);  loss = 1/2 E_t[max((V - R)^2, (V_clip - R)^2)].
    /// value_clipfrac = share of tokens where the clipped error is the larger. values, oldValues, returns, mask (B, T).
    /// </summary>
    public static (Tensor Loss, double ClipFrac) Compute(Tensor values, Tensor oldValues, Tensor returns, Tensor mask, double cliprangeValue)
    {
        using var scope = NewDisposeScope();
        var clipped = oldValues + (values - oldValues).clamp(-cliprangeValue, cliprangeValue);
        var loss1 = (values - returns).square();
        var loss2 = (clipped - returns).square();
        var loss = 0.5 * Masked.Mean(maximum(loss1, loss2), mask);
        double clipFrac = Masked.Mean(loss2.gt(loss1).to(values.dtype), mask).item<float>();
        return (loss.MoveToOuterDisposeScope(), clipFrac);
    }

    /// <summary>Explained variance 1 - Var(R - V) / Var(R) over valid tokens: 1 is a perfect critic, 0 no better than a constant.</summary>
    public static double ExplainedVariance(Tensor values, Tensor returns, Tensor mask)
    {
        using var scope = NewDisposeScope();
        double varReturns = Masked.Var(returns, mask).item<float>();
        return varReturns == 0 ? double.NaN : 1 - Masked.Var(returns - values, mask).item<float>() / varReturns;
    }
}
