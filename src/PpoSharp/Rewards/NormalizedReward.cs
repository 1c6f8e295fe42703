using PpoSharp.Algorithms;

namespace PpoSharp.Rewards;

/// <summary>
/// A reward model's scores normalised by the running moments of every score it has given in this run (see
/// <see cref="RunningMoments"/>): each batch first updates the moments, then is normalised with them. The trainer
/// checkpoints <see cref="Moments"/>; <see cref="LastRawMean"/> is the batch's mean before normalising (the proxy
/// score a user compares with the gold). With <c>normalize</c> false the scores pass through as they are, and only the
/// raw mean and moments are kept (what the logs and the over-optimisation check read).
/// </summary>
public sealed class NormalizedReward(IRewardFunction inner, bool normalize = true) : IRewardFunction
{
    public IRewardFunction Inner => inner;
    public string Name => inner.Name;
    public string? NeedsSolution => inner.NeedsSolution;
    public RunningMoments Moments { get; set; } = RunningMoments.Empty;
    public double LastRawMean { get; private set; } = double.NaN;

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch)
    {
        var raw = inner.Score(batch);
        LastRawMean = raw.Count == 0 ? double.NaN : raw.Average();
        Moments = Moments.Update(raw);
        return normalize ? raw.Select(Moments.Normalize).ToList() : raw;
    }

    /// <summary>
    /// <paramref name="reward"/> with each reward model in it (alone or as a part of a sum) normalised when
    /// <paramref name="normalize"/> (else tracked only); rules keep their fixed scale. Returns the reward and its normalisers.
    /// </summary>
    public static (IRewardFunction Reward, List<NormalizedReward> Normalizers) ForModels(IRewardFunction reward, bool normalize)
    {
        var normalizers = new List<NormalizedReward>();
        IRewardFunction Wrap(IRewardFunction f) => f is RewardModelScorer ? Add(new NormalizedReward(f, normalize)) : f;
        NormalizedReward Add(NormalizedReward n) { normalizers.Add(n); return n; }
        var wrapped = reward is CompositeReward c ? new CompositeReward(c.Parts.Select(p => (Wrap(p.Function), p.Weight)).ToList()) : Wrap(reward);
        return (wrapped, normalizers);
    }
}
