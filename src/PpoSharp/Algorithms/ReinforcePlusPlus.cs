using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>
/// REINFORCE++ (Hu et al. 2025, arXiv 2501.03262), as OpenRLHF's advantage estimators <c>reinforce</c> and
/// <c>reinforce_baseline</c> compute it (<c>experience_maker.compute_advantages_and_returns</c>): discounted returns of
/// per-token rewards, whitened over all valid tokens of the batch; no critic.
/// </summary>
public static class ReinforcePlusPlus
{
    /// <summary>
    /// G_t = r_t + gamma G_{t+1} (G_T = 0), OpenRLHF <c>get_cumulative_returns</c>. Rewards at masked positions are
    /// zeroed first and returns there are 0, so whatever the padding holds changes nothing. rewards, mask (B, T) -> (B, T).
    /// </summary>
    public static Tensor DiscountedReturns(Tensor rewards, Tensor mask, double gamma)
    {
        using var scope = NewDisposeScope();
        var m = mask.to(rewards.dtype);
        var r = rewards * m;                                                        // (B, T)
        long t = r.shape[1];
        var returns = new Tensor[t];
        var running = zeros_like(r.select(1, 0));                                   // (B)
        for (long i = t - 1; i >= 0; i--)
        {
            running = r.select(1, i) + gamma * running;
            returns[i] = running;
        }
        return (stack(returns, 1) * m).MoveToOuterDisposeScope();                  // (B, T)
    }

    /// <summary>
    /// A = whiten(G) over the batch's valid tokens (<see cref="Masked.Whiten"/>: (G - mean) / sqrt(var + 1e-8), var
    /// unbiased; OpenRLHF divides by the biased variance, a factor n/(n-1) apart over n tokens).
    /// tokenRewards, mask (B, T) -> advantages (B, T), returns G (B, T); both 0 at masked positions.
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) FromTokenRewards(Tensor tokenRewards, Tensor mask, double gamma = 1.0)
    {
        var returns = DiscountedReturns(tokenRewards, mask, gamma);
        return (Masked.Whiten(returns, mask), returns);
    }

    /// <summary>
    /// REINFORCE++ (OpenRLHF <c>reinforce</c>): r_t = -klCoef * kl_t at every response token plus the score at the last
    /// one (<see cref="RewardShaping.Rewards"/>, OpenRLHF <c>compute_reward</c>), then <see cref="FromTokenRewards"/>.
    /// scores (B), kl, mask (B, T) -> advantages (B, T), returns (B, T).
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) Compute(Tensor scores, Tensor kl, Tensor mask, double klCoef, double gamma = 1.0) =>
        FromTokenRewards(RewardShaping.Rewards(scores, kl, mask, klCoef), mask, gamma);

    /// <summary>
    /// REINFORCE++-baseline (OpenRLHF <c>reinforce_baseline</c>): the scores are centred on their group mean first,
    /// s_i - mean_group(s) (no division by the std: the batch whitening does the scaling), then token rewards with the
    /// KL penalty, returns with gamma = 1 (OpenRLHF forces it for this estimator) and whitening over the batch.
    /// scores (B) in groups of <paramref name="numGenerations"/> as in <see cref="GroupAdvantages"/>, kl, mask (B, T).
    /// </summary>
    public static (Tensor Advantages, Tensor Returns) ComputeBaseline(Tensor scores, Tensor kl, Tensor mask, double klCoef, int numGenerations)
    {
        using var scope = NewDisposeScope();
        var centered = GroupAdvantages.Centered(scores, numGenerations, "reinforce_baseline");      // (B)
        var (advantages, returns) = Compute(centered, kl, mask, klCoef, gamma: 1.0);
        return (advantages.MoveToOuterDisposeScope(), returns.MoveToOuterDisposeScope());
    }
}
