using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Critic-free advantage estimators, by their config names (TRL's <c>grpo</c>/<c>rloo</c>, OpenRLHF's others).</summary>
public enum AdvantageEstimator
{
    /// <summary><see cref="GroupAdvantages.Grpo"/>; with <see cref="RewardScaling.None"/> it is Dr. GRPO.</summary>
    Grpo,
    /// <summary><see cref="GroupAdvantages.Rloo"/>.</summary>
    Rloo,
    /// <summary>REINFORCE++: <see cref="ReinforcePlusPlus.Compute"/> (OpenRLHF's <c>reinforce</c>).</summary>
    Reinforce,
    /// <summary>REINFORCE++-baseline: <see cref="ReinforcePlusPlus.ComputeBaseline"/> (OpenRLHF's <c>reinforce_baseline</c>).</summary>
    ReinforceBaseline,
}

/// <summary>What GRPO divides the group-centred rewards by (TRL's <c>scale_rewards</c>).</summary>
public enum RewardScaling
{
    /// <summary>The standard deviation of the group (GRPO, Shao et al. 2024, arXiv 2402.03300). TRL's default.</summary>
    Group,
    /// <summary>The standard deviation of the whole batch of rewards (PPO Lite, arXiv 2508.08221).</summary>
    Batch,
    /// <summary>Nothing: Dr. GRPO (Liu et al. 2025, arXiv 2503.20783), which removes the question-difficulty bias of the std.</summary>
    None,
}

/// <summary>
/// Sequence-level advantages from a group of G completions per prompt. The batch holds N prompts x G completions laid
/// out contiguously: rewards (B) with B = N G, and row i belongs to group i / G. A group whose rewards are all equal
/// carries no signal and gets an advantage of exactly 0 (rounding in its mean could otherwise leave ~1e-9 / 1e-4).
/// </summary>
public static class GroupAdvantages
{
    /// <summary>Added to the standard deviation before dividing (TRL's GRPO and RLOO trainers).</summary>
    public const double StdEpsilon = 1e-4;

    /// <summary>
    /// GRPO (arXiv 2402.03300; TRL <c>GRPOTrainer._generate_and_score_completions</c>):
    /// A_i = (r_i - mean_group(r)) / (std + 1e-4), with std the unbiased standard deviation (torch.std) of the group
    /// (<see cref="RewardScaling.Group"/>) or of the batch (<see cref="RewardScaling.Batch"/>); no division with
    /// <see cref="RewardScaling.None"/> (Dr. GRPO, arXiv 2503.20783). rewards (B) -> advantages (B).
    /// Throws when <paramref name="numGenerations"/> &lt; 2 or does not divide B.
    /// </summary>
    public static Tensor Grpo(Tensor rewards, int numGenerations, RewardScaling scaleRewards = RewardScaling.Group)
    {
        using var scope = NewDisposeScope();
        var grouped = Grouped(rewards, numGenerations, "grpo");                           // (N, G)
        var centered = grouped - grouped.mean([1], keepdim: true);                         // (N, G)
        var scaled = scaleRewards switch
        {
            RewardScaling.Group => centered / (grouped.std(1, unbiased: true, keepdim: true) + StdEpsilon),
            RewardScaling.Batch => centered / (rewards.std(unbiased: true) + StdEpsilon),
            _ => centered,
        };
        return ZeroFlatGroups(scaled, grouped).flatten().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// RLOO, leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740; TRL <c>RLOOTrainer</c>,
    /// OpenRLHF <c>rloo</c>): A_i = r_i - 1/(G-1) sum_{j != i} r_j = G/(G-1) (r_i - mean_group(r)). rewards (B) -> (B).
    /// TRL folds its KL penalty into the reward first: pass r - beta * <see cref="SequenceKl.Compute"/> for that.
    /// </summary>
    public static Tensor Rloo(Tensor rewards, int numGenerations)
    {
        using var scope = NewDisposeScope();
        var grouped = Grouped(rewards, numGenerations, "rloo");                            // (N, G)
        var baseline = (grouped.sum(1, keepdim: true) - grouped) / (numGenerations - 1);  // (N, G)
        return ZeroFlatGroups(grouped - baseline, grouped).flatten().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Sequence advantages spread over the tokens of each response: A_{b,t} = A_b where mask is set, 0 elsewhere.
    /// advantages (B), mask (B, T) -> (B, T).
    /// </summary>
    public static Tensor ToTokens(Tensor advantages, Tensor mask) => advantages.unsqueeze(1) * mask.to(advantages.dtype);

    /// <summary>r_i - mean_group(r), no scaling: rewards (B) -> (B). <paramref name="estimator"/> names the caller in errors.</summary>
    internal static Tensor Centered(Tensor rewards, int numGenerations, string estimator)
    {
        using var scope = NewDisposeScope();
        var grouped = Grouped(rewards, numGenerations, estimator);                        // (N, G)
        var centered = grouped - grouped.mean([1], keepdim: true);
        return ZeroFlatGroups(centered, grouped).flatten().MoveToOuterDisposeScope();
    }

    /// <summary>rewards (B) -> (N, G), after checking that the batch is made of whole groups of at least 2.</summary>
    private static Tensor Grouped(Tensor rewards, int numGenerations, string estimator)
    {
        if (rewards.dim() != 1)
            throw new PpoSharpException($"{estimator}: rewards must hold one score per completion, shape (B); got ({string.Join(", ", rewards.shape)})");
        if (numGenerations < 2)
            throw new PpoSharpException($"num_generations must be at least 2 for {estimator}: its baseline comes from the other completions of the same prompt (got {numGenerations})");
        long b = rewards.shape[0];
        if (b % numGenerations != 0)
            throw new PpoSharpException($"{estimator}: {b} completions are not a whole number of groups of num_generations = {numGenerations}");
        return rewards.view(b / numGenerations, numGenerations);
    }

    /// <summary>Sets to 0 every row of <paramref name="x"/> (N, G) whose group in <paramref name="grouped"/> (N, G) has max == min.</summary>
    private static Tensor ZeroFlatGroups(Tensor x, Tensor grouped) =>
        x.masked_fill(grouped.amax([1], keepdim: true).eq(grouped.amin([1], keepdim: true)), 0);
}
