using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Statistics over the valid entries of a tensor; <c>mask</c> is 1/true where an entry counts.</summary>
public static class Masked
{
    /// <summary>sum(x * m) / sum(m) over all entries.</summary>
    public static Tensor Mean(Tensor x, Tensor mask)
    {
        var m = mask.to(x.dtype);
        return (x * m).sum() / m.sum().clamp_min(1);
    }

    /// <summary>Per row: sum_t(x * m) / sum_t(m), (B, T) -> (B).</summary>
    public static Tensor RowMean(Tensor x, Tensor mask)
    {
        var m = mask.to(x.dtype);
        return (x * m).sum(1) / m.sum(1).clamp_min(1);
    }

    /// <summary>Variance of the valid entries, with Bessel's correction n / (n - 1) as TRL and OpenRLHF apply.</summary>
    public static Tensor Var(Tensor x, Tensor mask)
    {
        var m = mask.to(x.dtype);
        var mean = Mean(x, mask);
        var n = m.sum();
        var variance = Mean((x - mean).square(), mask);
        return variance * n / (n - 1).clamp_min(1);
    }

    /// <summary>
    /// (x - mean) / sqrt(var + 1e-8) over valid entries; with <paramref name="shiftMean"/> = false the mean is added
    /// back (rewards keep their sign). Masked entries are returned as 0 so that they cannot leak anywhere.
    /// </summary>
    public static Tensor Whiten(Tensor x, Tensor mask, bool shiftMean = true)
    {
        var mean = Mean(x, mask);
        var whitened = (x - mean) * (Var(x, mask) + 1e-8).rsqrt();
        if (!shiftMean) whitened += mean;
        return whitened * mask.to(x.dtype);
    }
}
