using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>
/// A conservative score from a reward-model ensemble (Coste et al. 2023, "Reward Model Ensembles Help Mitigate
/// Overoptimization", arXiv 2310.02743): where the members disagree, the policy has left the data they agree on, and
/// the score is lowered there. k = 0 is the plain mean; k = 1 (the default) takes one standard deviation off.
/// </summary>
public static class EnsembleReward
{
    /// <summary>mean_m r_m - k std_m r_m (B) of member scores (M, B); std is the members' spread, sqrt(1/M sum (r_m - mean)²).</summary>
    public static Tensor Conservative(Tensor scores, double k)
    {
        var mean = scores.mean([0]);                                                  // (B)
        var std = (scores - mean).pow(2).mean([0]).sqrt();                            // (B)
        return mean - k * std;
    }
}
