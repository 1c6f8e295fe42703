using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Where the importance ratio is formed (TRL's <c>importance_sampling_level</c>).</summary>
public enum RatioLevel
{
    /// <summary>One ratio per token, exp(log pi_t - log pi_old_t) (PPO; TRL's default).</summary>
    Token,
    /// <summary>
    /// One ratio per sequence, exp of the masked mean of the token log-ratios, shared by its tokens
    /// (GSPO, Zheng et al. 2025, arXiv 2507.18071).
    /// </summary>
    Sequence,
}

/// <summary>How per-token losses become one number (TRL's <c>loss_type</c> names).</summary>
public enum LossAggregation
{
    /// <summary>Mean over the valid tokens of each sequence, then mean over sequences (GRPO, arXiv 2402.03300).</summary>
    Grpo,
    /// <summary>Sum over valid tokens / their count in the tensors given (TRL <c>bnpo</c>; PPO's token mean).</summary>
    Bnpo,
    /// <summary>Sum over valid tokens / (B x max_completion_length), a constant (Dr. GRPO, arXiv 2503.20783).</summary>
    DrGrpo,
    /// <summary>
    /// Sum over valid tokens / the token count of the whole accumulated batch when the caller passes it, else of the
    /// tensors given, which is then <see cref="Bnpo"/> (DAPO, Yu et al. 2025, arXiv 2503.14476; TRL's default).
    /// </summary>
    Dapo,
}

/// <summary>
/// Settings of <see cref="PolicyLoss.Compute"/>. Defaults are TRL's GRPOConfig (epsilon 0.2, epsilon_high = epsilon,
/// token-level ratio, loss_type dapo, beta 0) with OpenRLHF's dual clip off; PPO is <c>new PolicyLossOptions(cliprange)</c>.
/// </summary>
/// <param name="Epsilon">Lower clip: the ratio is kept above 1 - Epsilon (TRL <c>epsilon</c>, OpenRLHF <c>eps_clip</c>).</param>
/// <param name="EpsilonHigh">Upper clip 1 + EpsilonHigh; null = Epsilon. DAPO's clip-higher uses 0.28 (arXiv 2503.14476).</param>
/// <param name="DualClip">c > 1: for A &lt; 0 the loss is at most -c A (Ye et al. 2020, arXiv 1912.09729; OpenRLHF <c>dual_clip</c>); null = off.</param>
/// <param name="Level">Token or sequence (GSPO) importance ratio.</param>
/// <param name="Aggregation">Loss aggregation, TRL's <c>loss_type</c>.</param>
/// <param name="Beta">Weight of the per-token k3 KL(pi || pi_ref) added to the loss (GRPO); 0 = none, and no reference log-probs are needed.</param>
/// <param name="MaxCompletionLength">The constant of <see cref="LossAggregation.DrGrpo"/> (TRL <c>max_completion_length</c>); required by it only.</param>
public sealed record PolicyLossOptions(
    double Epsilon = 0.2,
    double? EpsilonHigh = null,
    double? DualClip = null,
    RatioLevel Level = RatioLevel.Token,
    LossAggregation Aggregation = LossAggregation.Dapo,
    double Beta = 0.0,
    int? MaxCompletionLength = null)
{
    /// <summary>The upper clip actually used: <see cref="EpsilonHigh"/> or, when unset, <see cref="Epsilon"/>.</summary>
    public double High => EpsilonHigh ?? Epsilon;

    /// <summary>Throws a <see cref="PpoSharpException"/> naming the config key of the first bad setting; returns this.</summary>
    public PolicyLossOptions Validate()
    {
        if (!(Epsilon >= 0)) throw new PpoSharpException($"epsilon must be >= 0 (got {Epsilon})");
        if (!(High >= 0)) throw new PpoSharpException($"epsilon_high must be >= 0 (got {EpsilonHigh})");
        if (DualClip is double c && !(c > 1)) throw new PpoSharpException($"dual_clip must be > 1 (got {c})");
        if (!(Beta >= 0)) throw new PpoSharpException($"beta must be >= 0 (got {Beta})");
        if (Aggregation == LossAggregation.DrGrpo && MaxCompletionLength is not > 0)
            throw new PpoSharpException($"loss_type dr_grpo needs max_completion_length > 0, the constant it divides the summed loss by (got {MaxCompletionLength?.ToString() ?? "none"})");
        return this;
    }
}

/// <summary>Diagnostics of one policy-loss evaluation. TRL's log names are given where TRL logs the quantity.</summary>
/// <param name="ApproxKl">E_t[(r_t - 1) - log r_t] with the token ratio r_t = pi / pi_old (k3 of KL(pi_old || pi)).</param>
/// <param name="ClipFrac">Share of tokens where the clip bounds the loss, low or high (TRL <c>clip_ratio/region_mean</c>, PPO's clipfrac).</param>
/// <param name="ClipRatioLow">Share where A &lt; 0 and ratio &lt; 1 - epsilon (TRL <c>clip_ratio/low_mean</c>).</param>
/// <param name="ClipRatioHigh">Share where A > 0 and ratio > 1 + epsilon_high (TRL <c>clip_ratio/high_mean</c>).</param>
/// <param name="DualClipFrac">Share where A &lt; 0 and ratio > c, the dual clip binding; 0 without dual clip.</param>
/// <param name="RatioMean">Mean importance ratio.</param>
/// <param name="RatioMax">Largest importance ratio of a valid token.</param>
/// <param name="Kl">Mean per-token k3 KL(pi || pi_ref) of the beta term (TRL <c>kl</c>); null when beta = 0.</param>
public sealed record PolicyLossStats(double ApproxKl, double ClipFrac, double ClipRatioLow, double ClipRatioHigh,
    double DualClipFrac, double RatioMean, double RatioMax, double? Kl)
{
    /// <summary>The statistics under TRL's log names where TRL has one (else snake_case of the property).</summary>
    public IReadOnlyDictionary<string, double> Metrics()
    {
        var metrics = new Dictionary<string, double>
        {
            ["approx_kl"] = ApproxKl,
            ["clip_ratio/region_mean"] = ClipFrac,
            ["clip_ratio/low_mean"] = ClipRatioLow,
            ["clip_ratio/high_mean"] = ClipRatioHigh,
            ["dual_clip_ratio"] = DualClipFrac,
            ["ratio_mean"] = RatioMean,
            ["ratio_max"] = RatioMax,
        };
        if (Kl is double kl) metrics["kl"] = kl;
        return metrics;
    }
}

/// <summary>
/// The clipped surrogate policy loss shared by PPO (Schulman et al. 2017, arXiv 1707.06347) and the critic-free
/// trainers (GRPO, Dr. GRPO, DAPO, GSPO, RLOO, REINFORCE++), after TRL's <c>GRPOTrainer._compute_loss</c> and
/// OpenRLHF's <c>PolicyLoss</c>.
/// </summary>
public static class PolicyLoss
{
    /// <summary>
    /// r_t = exp(log pi_t - log pi_old_t) (or GSPO's sequence ratio, <see cref="RatioLevel.Sequence"/>);
    /// l_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps, 1 + eps_high)), i.e. -min(r A, clip(r) A);
    /// with dual clip c and A_t &lt; 0: l_t = min(l_t, -c A_t); with beta > 0: l_t += beta k3_t,
    /// k3_t = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1; then <see cref="Aggregate"/>.
    /// logp, oldLogp, mask (B, T); advantages (B, T), or (B) for one advantage per sequence; refLogp (B, T), needed
    /// when beta > 0; batchTokenCount: valid tokens of the whole accumulated batch, used by <see cref="LossAggregation.Dapo"/>;
    /// isWeights (B, T): detached rollout importance weights (<see cref="RolloutCorrection.Weights"/>) that multiply l_t before
    /// the KL term is added, as TRL's <c>per_token_loss *= importance_sampling_ratio</c>.
    /// Statistics are token means; at sequence level, means over sequences of their token means (as TRL logs them).
    /// </summary>
    public static (Tensor Loss, PolicyLossStats Stats) Compute(Tensor logp, Tensor oldLogp, Tensor advantages, Tensor mask,
        PolicyLossOptions options, Tensor? refLogp = null, double? batchTokenCount = null, Tensor? isWeights = null)
    {
        options.Validate();
        if (options.Beta > 0 && refLogp is null) throw new PpoSharpException($"beta = {options.Beta} needs the reference model's log-probabilities (refLogp)");
        using var scope = NewDisposeScope();
        var adv = advantages.dim() == 1 ? advantages.unsqueeze(1) : advantages;       // (B, 1) or (B, T)
        var tokenLogRatio = logp - oldLogp;                                            // (B, T)
        var ratio = Ratio(tokenLogRatio, mask, options.Level);                         // (B, T)
        var perToken = ClippedSurrogate(ratio, adv, options);                          // (B, T)
        if (isWeights is not null) perToken = perToken * isWeights;
        var kl = options.Beta > 0 ? Kl.PerToken(logp, refLogp!, KlEstimator.K3) : null; // (B, T)
        if (kl is not null) perToken += options.Beta * kl;
        var loss = Aggregate(perToken, mask, options.Aggregation, options.MaxCompletionLength, batchTokenCount);
        var stats = Stats(ratio, tokenLogRatio, adv, mask, kl, options);
        return (loss.MoveToOuterDisposeScope(), stats);
    }

    /// <summary>
    /// The per-token losses as one scalar: <c>grpo</c> mean_b(sum_t l m / max(sum_t m, 1)); <c>bnpo</c> sum l m / max(sum m, 1);
    /// <c>dr_grpo</c> sum l m / (B x maxCompletionLength); <c>dapo</c> sum l m / batchTokenCount, or as bnpo without it
    /// (TRL <c>_compute_loss</c>). perToken, mask (B, T) -> scalar.
    /// </summary>
    public static Tensor Aggregate(Tensor perToken, Tensor mask, LossAggregation aggregation, int? maxCompletionLength = null, double? batchTokenCount = null)
    {
        var m = mask.to(perToken.dtype);
        return aggregation switch
        {
            LossAggregation.Grpo => Masked.RowMean(perToken, mask).mean(),
            LossAggregation.DrGrpo => (perToken * m).sum() / (perToken.shape[0] * (maxCompletionLength
                ?? throw new PpoSharpException("loss_type dr_grpo needs max_completion_length"))),
            LossAggregation.Dapo when batchTokenCount is double n => (perToken * m).sum() / Math.Max(n, 1),
            _ => Masked.Mean(perToken, mask),
        };
    }

    /// <summary>
    /// Token level: exp(log pi_t - log pi_old_t). Sequence level (GSPO): exp(sum_t m_t (log pi_t - log pi_old_t) / sum_t m_t),
    /// the same for every token of the row, with gradients to each token's log-prob. tokenLogRatio, mask (B, T) -> (B, T).
    /// </summary>
    public static Tensor Ratio(Tensor tokenLogRatio, Tensor mask, RatioLevel level) => level switch
    {
        RatioLevel.Sequence => Masked.RowMean(tokenLogRatio, mask).unsqueeze(1).expand_as(tokenLogRatio).exp(),
        _ => tokenLogRatio.exp(),
    };

    /// <summary>max(-A r, -A clip(r, 1 - eps, 1 + eps_high)), then min(., -c A) where A &lt; 0 under dual clip c. ratio (B, T), adv (B, T) or (B, 1) -> (B, T).</summary>
    private static Tensor ClippedSurrogate(Tensor ratio, Tensor adv, PolicyLossOptions o)
    {
        var unclipped = -adv * ratio;
        var clipped = -adv * ratio.clamp(1 - o.Epsilon, 1 + o.High);
        var loss = maximum(unclipped, clipped);
        return o.DualClip is double c ? where(adv.lt(0), minimum(loss, -c * adv), loss) : loss;
    }

    private static PolicyLossStats Stats(Tensor ratio, Tensor tokenLogRatio, Tensor adv, Tensor mask, Tensor? kl, PolicyLossOptions o)
    {
        using var noGrad = no_grad();
        double Mean(Tensor x) => Item(o.Level == RatioLevel.Sequence
            ? Masked.RowMean(x.to(ratio.dtype).expand_as(ratio), mask).mean()
            : Masked.Mean(x.to(ratio.dtype).expand_as(ratio), mask));
        var low = adv.lt(0) & ratio.lt(1 - o.Epsilon);
        var high = adv.gt(0) & ratio.gt(1 + o.High);
        return new PolicyLossStats(
            ApproxKl: Item(Masked.Mean(tokenLogRatio.exp() - 1 - tokenLogRatio, mask)),
            ClipFrac: Mean(low | high),
            ClipRatioLow: Mean(low),
            ClipRatioHigh: Mean(high),
            DualClipFrac: o.DualClip is double c ? Mean(adv.lt(0) & ratio.gt(c)) : 0,
            RatioMean: Mean(ratio),
            RatioMax: Item(ratio.masked_fill(mask.logical_not(), 0).max()),
            Kl: kl is null ? null : Item(Masked.Mean(kl, mask)));
    }

    private static double Item(Tensor scalar) => scalar.to(ScalarType.Float32).item<float>();
}
