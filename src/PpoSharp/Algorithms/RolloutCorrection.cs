using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>How the rollout importance weight is formed and bounded (TRL's <c>vllm_importance_sampling_mode</c>).</summary>
public enum ImportanceSamplingMode
{
    /// <summary>One weight per token, clamped to [clip_min, clip_max].</summary>
    TokenTruncate,
    /// <summary>One weight per token, set to 0 where it leaves [clip_min, clip_max].</summary>
    TokenMask,
    /// <summary>One weight per sequence, exp of the summed token log-ratios, clamped; shared by its tokens.</summary>
    SequenceTruncate,
    /// <summary>One weight per sequence, set to 0 (for every token of the row) when it leaves [clip_min, clip_max]; TRL's default.</summary>
    SequenceMask,
}

/// <summary>
/// Correction for the gap between the rollout engine's sampling distribution and the trainer's: the engine (vLLM, SGLang,
/// another precision) samples from pi_roll, the trainer recomputes log pi_old on the same tokens. After TRL's
/// <c>GRPOTrainer</c> (<c>vllm_importance_sampling_*</c>), verl's <c>rollout_correction</c> and OpenRLHF's
/// <c>is_correction</c> (truncated importance sampling, Yao et al. 2025, "Your efficient RL framework secretly brings you
/// off-policy RL training").
/// </summary>
public static class RolloutCorrection
{
    /// <summary>
    /// The detached weights rho (B, T) that multiply the per-token policy loss. With d_t = (log pi_old_t - log pi_roll_t) m_t:
    /// token modes rho_t = exp(d_t); sequence modes rho_t = exp(sum_s d_s) for every t of the row. Truncate modes:
    /// clamp(rho, clip_min, clip_max); mask modes: rho where clip_min &lt;= rho &lt;= clip_max, else 0. A null bound is no
    /// bound. Entries outside the mask are 1 for token modes (they carry no loss anyway). trainLogp, rolloutLogp, mask (B, T).
    /// </summary>
    public static Tensor Weights(Tensor trainLogp, Tensor rolloutLogp, Tensor mask, ImportanceSamplingMode mode, double? clipMin, double? clipMax)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var d = (trainLogp - rolloutLogp).nan_to_num(0, 0, 0) * mask.to(trainLogp.dtype);             // (B, T)
        bool sequence = mode is ImportanceSamplingMode.SequenceTruncate or ImportanceSamplingMode.SequenceMask;
        var rho = sequence ? d.sum(1, keepdim: true).exp().expand_as(d) : d.exp();                    // (B, T)
        Tensor weights;
        if (mode is ImportanceSamplingMode.TokenTruncate or ImportanceSamplingMode.SequenceTruncate)
        {
            weights = rho;
            if (clipMin is double lo) weights = weights.clamp_min(lo);
            if (clipMax is double hi) weights = weights.clamp_max(hi);
        }
        else
        {
            var outside = zeros_like(rho, ScalarType.Bool);                                             // (B, T)
            if (clipMin is double lo) outside = outside.logical_or(rho.lt(lo));
            if (clipMax is double hi) outside = outside.logical_or(rho.gt(hi));
            weights = rho.masked_fill(outside, 0);
        }
        return weights.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean and max of |log pi_train - log pi_roll| over the valid tokens that have an engine log-prob (a NaN in
    /// <paramref name="rolloutLogp"/> marks a token the engine gave none for, such as an EOS the client appended):
    /// the metrics <c>rollout_logprob_diff_mean</c> and <c>rollout_logprob_diff_max</c>, the first sign of a broken weight
    /// sync. trainLogp, rolloutLogp, mask (B, T); (NaN, NaN) when no token counts.
    /// </summary>
    public static (double Mean, double Max) LogProbDiff(Tensor trainLogp, Tensor rolloutLogp, Tensor mask)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var valid = mask.to(ScalarType.Bool).logical_and(rolloutLogp.isnan().logical_not());          // (B, T)
        if (!valid.any().item<bool>()) return (double.NaN, double.NaN);
        var diff = (trainLogp - rolloutLogp).abs().nan_to_num(0, 0, 0).to(ScalarType.Float64);        // (B, T)
        return (Masked.Mean(diff, valid).item<double>(), diff.masked_fill(valid.logical_not(), 0).max().item<double>());
    }
}
