namespace PpoSharp.Algorithms;

/// <summary>
/// Running mean and variance of every score seen so far, merged batch by batch (Chan, Golub and LeVeque's parallel
/// update), for normalising a reward model's scores as OpenRLHF's <c>normalize_reward</c> does: r' = (r - mean) / std,
/// std the unbiased standard deviation. A reward model's raw scores have no fixed scale; normalised ones have mean 0 and
/// std 1, so that the KL coefficient, <c>score_clip</c> and the missing-EOS penalty mean the same for every model.
/// Immutable, so that a checkpoint stores it as three numbers and a resumed run normalises exactly as before.
/// </summary>
public sealed record RunningMoments(double Count, double Mean, double M2)
{
    public static readonly RunningMoments Empty = new(0, 0, 0);

    /// <summary>The unbiased standard deviation (1 before there are two scores).</summary>
    public double Std => Count > 1 ? Math.Sqrt(M2 / (Count - 1)) : 1;

    /// <summary>These moments merged with a batch's: n = n_a + n_b, mean += d n_b / n, M2 = M2_a + M2_b + d² n_a n_b / n (d = mean_b - mean_a).</summary>
    public RunningMoments Update(IReadOnlyList<double> batch)
    {
        if (batch.Count == 0) return this;
        double nb = batch.Count, meanB = batch.Average(), m2B = batch.Sum(x => (x - meanB) * (x - meanB));
        double n = Count + nb, delta = meanB - Mean;
        return new RunningMoments(n, Mean + delta * nb / n, M2 + m2B + delta * delta * Count * nb / n);
    }

    /// <summary>(x - mean) / max(std, 1e-8).</summary>
    public double Normalize(double x) => (x - Mean) / Math.Max(Std, 1e-8);
}
