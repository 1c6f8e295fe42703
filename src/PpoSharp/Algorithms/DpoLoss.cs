using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>The DPO loss functions, by TRL's <c>loss_type</c> names.</summary>
public enum DpoLossType
{
    /// <summary>-log sigmoid(beta l) (Rafailov et al. 2023, arXiv 2305.18290); with label smoothing, cDPO. TRL's default.</summary>
    Sigmoid,
    /// <summary>(l - 1/(2 beta))^2 (IPO, Azar et al. 2023, arXiv 2310.12036); expects length-averaged log-probs, see <see cref="DpoLoss"/>.</summary>
    Ipo,
    /// <summary>relu(1 - beta l) (SLiC, Zhao et al. 2023, arXiv 2305.10425).</summary>
    Hinge,
    /// <summary>Robust DPO, unbiased under label flips with probability label_smoothing (Chowdhury et al. 2024, arXiv 2403.00409).</summary>
    Robust,
}

/// <summary>Settings of <see cref="DpoLoss"/>; defaults are TRL's DPOConfig (beta 0.1, sigmoid, label_smoothing 0).</summary>
/// <param name="Beta">Strength of the tie to the reference model (IPO's tau).</param>
/// <param name="LossType">Which loss.</param>
/// <param name="LabelSmoothing">Assumed probability that a preference label is flipped, in [0, 0.5); sigmoid (cDPO) and robust only.</param>
public sealed record DpoOptions(double Beta = 0.1, DpoLossType LossType = DpoLossType.Sigmoid, double LabelSmoothing = 0.0)
{
    /// <summary>Throws a <see cref="PpoSharpException"/> naming the config key of the first bad setting; returns this.</summary>
    public DpoOptions Validate()
    {
        if (!(Beta > 0)) throw new PpoSharpException($"beta must be > 0 (got {Beta})");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 0.5))
            throw new PpoSharpException($"label_smoothing must be in [0, 0.5), the probability that a preference label is flipped (got {LabelSmoothing})");
        if (LabelSmoothing > 0 && LossType is not (DpoLossType.Sigmoid or DpoLossType.Robust))
            throw new PpoSharpException($"label_smoothing applies to loss_type sigmoid and robust only, not {OptionNames.Of(LossType)}; set it to 0");
        return this;
    }
}

/// <summary>
/// Batch means of the implicit rewards beta (log pi - log pi_ref) and of the policy log-probs, under TRL's log names:
/// <c>rewards/chosen</c>, <c>rewards/rejected</c>, <c>rewards/accuracies</c> (share of pairs whose chosen reward is
/// larger, a tie counting half: TRL counts ties as wrong, which reads 0 % for a policy still equal to its reference),
/// <c>rewards/margins</c>, <c>logps/chosen</c>, <c>logps/rejected</c>.
/// </summary>
public sealed record DpoStats(double RewardsChosen, double RewardsRejected, double RewardsAccuracies, double RewardsMargins,
    double LogpsChosen, double LogpsRejected)
{
    public IReadOnlyDictionary<string, double> Metrics() => new Dictionary<string, double>
    {
        ["rewards/chosen"] = RewardsChosen,
        ["rewards/rejected"] = RewardsRejected,
        ["rewards/accuracies"] = RewardsAccuracies,
        ["rewards/margins"] = RewardsMargins,
        ["logps/chosen"] = LogpsChosen,
        ["logps/rejected"] = LogpsRejected,
    };
}

/// <summary>
/// Direct Preference Optimization and its variants, after TRL's <c>DPOTrainer</c> (<c>dpo_loss</c>). Inputs are
/// per-sequence log-probs of the chosen and rejected responses, summed over response tokens
/// (<see cref="SequenceLogProbs"/>), under the policy and under the frozen reference. For <see cref="DpoLossType.Ipo"/>
/// pass length-averaged log-probs (<c>SequenceLogProbs(..., lengthAverage: true)</c>, for the policy and the reference
/// alike): TRL does so, with the IPO authors' agreement, so that beta does not depend on response length.
/// </summary>
public static class DpoLoss
{
    /// <summary>
    /// l = (log pi(y_c) - log pi(y_r)) - (log pi_ref(y_c) - log pi_ref(y_r)); loss = mean over pairs of
    /// <see cref="PerPair"/>(l). All inputs (B) -> scalar loss and <see cref="DpoStats"/>.
    /// </summary>
    public static (Tensor Loss, DpoStats Stats) Compute(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected, DpoOptions options)
    {
        options.Validate();
        using var scope = NewDisposeScope();
        var logits = (policyChosen - policyRejected) - (refChosen - refRejected);        // (B)
        var loss = PerPair(logits, options).mean();
        var stats = Stats(policyChosen, policyRejected, refChosen, refRejected, options.Beta);
        return (loss.MoveToOuterDisposeScope(), stats);
    }

    /// <summary>
    /// Loss of each pair from its logit l (B) -> (B), with ls = label smoothing:
    /// sigmoid: -(1 - ls) log sigma(beta l) - ls log sigma(-beta l) (cDPO when ls > 0);
    /// ipo: (l - 1/(2 beta))^2; hinge: relu(1 - beta l);
    /// robust: (-(1 - ls) log sigma(beta l) + ls log sigma(-beta l)) / (1 - 2 ls), equal to sigmoid at ls = 0.
    /// </summary>
    public static Tensor PerPair(Tensor logits, DpoOptions options)
    {
        double beta = options.Beta, ls = options.LabelSmoothing;
        var logSigPos = nn.functional.logsigmoid(beta * logits);                        // log sigma(beta l)
        var logSigNeg = nn.functional.logsigmoid(-beta * logits);                       // log sigma(-beta l)
        return options.LossType switch
        {
            DpoLossType.Ipo => (logits - 1 / (2 * beta)).square(),
            DpoLossType.Hinge => nn.functional.relu(1 - beta * logits),
            DpoLossType.Robust => (-(1 - ls) * logSigPos + ls * logSigNeg) / (1 - 2 * ls),
            _ => -(1 - ls) * logSigPos - ls * logSigNeg,
        };
    }

    /// <summary>
    /// Per-sequence log-prob of a response: sum_t m_t log pi_t, or with <paramref name="lengthAverage"/> that sum over
    /// max(sum_t m_t, 1) (for IPO). tokenLogp, mask (B, T) -> (B).
    /// </summary>
    public static Tensor SequenceLogProbs(Tensor tokenLogp, Tensor mask, bool lengthAverage = false) =>
        lengthAverage ? Masked.RowMean(tokenLogp, mask) : (tokenLogp * mask.to(tokenLogp.dtype)).sum(1);

    private static DpoStats Stats(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected, double beta)
    {
        using var noGrad = no_grad();
        var chosen = beta * (policyChosen - refChosen);                                 // (B)
        var rejected = beta * (policyRejected - refRejected);                           // (B)
        return new DpoStats(
            RewardsChosen: Item(chosen.mean()),
            RewardsRejected: Item(rejected.mean()),
            RewardsAccuracies: Item((chosen.gt(rejected).to(ScalarType.Float32) + 0.5 * chosen.eq(rejected).to(ScalarType.Float32)).mean()),   // a tie counts half
            RewardsMargins: Item((chosen - rejected).mean()),
            LogpsChosen: Item(policyChosen.mean()),
            LogpsRejected: Item(policyRejected.mean()));
    }

    private static double Item(Tensor scalar) => scalar.to(ScalarType.Float32).item<float>();
}
