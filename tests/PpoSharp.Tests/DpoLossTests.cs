using PpoSharp.Algorithms;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>DPO losses at a known logit. One pair: log pi(c) = -10, log pi(r) = -12, log pi_ref(c) = log pi_ref(r) = -11,
/// so l = (-10 + 12) - (-11 + 11) = 2 and, with beta 0.1, beta l = 0.2.
/// -log sigma(0.2) = log(1 + e^-0.2) = 0.5981389;  -log sigma(-0.2) = 0.5981389 + 0.2 = 0.7981389.</summary>
public class DpoLossTests
{
    private static Tensor V(params float[] x) => tensor(x);

    private static double Loss(DpoOptions options) =>
        DpoLoss.Compute(V(-10), V(-12), V(-11), V(-11), options).Loss.item<float>();

    [Fact]
    public void Sigmoid_IsMinusLogSigmoidOfBetaLogit()
    {
        Assert.Equal(0.5981389, Loss(new DpoOptions()), 5);
    }

    [Fact]
    public void Sigmoid_WithLabelSmoothing_IsCdpo()
    {
        // 0.9 * 0.5981389 + 0.1 * 0.7981389 = 0.6181389
        Assert.Equal(0.6181389, Loss(new DpoOptions(LabelSmoothing: 0.1)), 5);
    }

    [Fact]
    public void Ipo_IsSquaredDistanceToOneOverTwoBeta()
    {
        Assert.Equal(9.0, Loss(new DpoOptions(LossType: DpoLossType.Ipo)), 4);      // (2 - 1 / 0.2)^2 = (2 - 5)^2
    }

    [Fact]
    public void Hinge_IsReluOfOneMinusBetaLogit()
    {
        Assert.Equal(0.8, Loss(new DpoOptions(LossType: DpoLossType.Hinge)), 5);    // relu(1 - 0.2)
        Assert.Equal(0.0, DpoLoss.PerPair(V(20), new DpoOptions(LossType: DpoLossType.Hinge)).item<float>(), 6);
    }

    [Fact]
    public void Robust_HandComputed_AndEqualsSigmoidWithoutLabelSmoothing()
    {
        // (0.9 * 0.5981389 - 0.1 * 0.7981389) / (1 - 0.2) = 0.4585111 / 0.8 = 0.5731389
        Assert.Equal(0.5731389, Loss(new DpoOptions(LossType: DpoLossType.Robust, LabelSmoothing: 0.1)), 5);
        var logits = V(-3, -0.5f, 0, 2, 7);
        var robust = DpoLoss.PerPair(logits, new DpoOptions(LossType: DpoLossType.Robust)).data<float>().ToArray();
        var sigmoid = DpoLoss.PerPair(logits, new DpoOptions()).data<float>().ToArray();
        Assert.Equal(sigmoid, robust);
    }

    [Fact]
    public void Sigmoid_Gradient_IsMinusBetaSigmoidOfMinusBetaLogit()
    {
        // d/d log pi(c) of -log sigma(beta l) = -beta sigma(-beta l) = -0.1 / (1 + e^0.2) = -0.0450166; the rejected side mirrors it
        var chosen = V(-10).requires_grad_();
        var rejected = V(-12).requires_grad_();
        DpoLoss.Compute(chosen, rejected, V(-11), V(-11), new DpoOptions()).Loss.backward();
        Assert.Equal(-0.0450166, chosen.grad!.item<float>(), 6);
        Assert.Equal(0.0450166, rejected.grad!.item<float>(), 6);
    }

    [Fact]
    public void Stats_AreTrlRewardsAndLogps()
    {
        // pair 1: rewards 0.1 (-10 + 11) = 0.1 and 0.1 (-12 + 11) = -0.1;  pair 2: 0.1 (-8 + 9) = 0.1 and 0.1 (-5 + 7) = 0.2
        // chosen mean 0.1, rejected mean 0.05, accuracy 1/2, margins (0.2 - 0.1) / 2 = 0.05, logps -9 and -8.5
        var (_, s) = DpoLoss.Compute(V(-10, -8), V(-12, -5), V(-11, -9), V(-11, -7), new DpoOptions());
        Assert.Equal(0.1, s.RewardsChosen, 5);
        Assert.Equal(0.05, s.RewardsRejected, 5);
        Assert.Equal(0.5, s.RewardsAccuracies, 5);
        Assert.Equal(0.05, s.RewardsMargins, 5);
        Assert.Equal((-9.0, -8.5), (s.LogpsChosen, s.LogpsRejected));
        Assert.Equal(0.5, s.Metrics()["rewards/accuracies"], 5);
    }

    [Fact]
    public void Stats_TieCountsHalf()
    {
        // rewards: pair 1 ahead (0.1 vs -0.1), pair 2 a tie (0 and 0: policy = reference), pair 3 behind (-0.1 vs 0.1)
        // accuracy (1 + 0.5 + 0) / 3 = 0.5; a tie counted as wrong would give 1/3
        var (_, s) = DpoLoss.Compute(V(-10, -8, -12), V(-12, -5, -10), V(-11, -8, -11), V(-11, -5, -11), new DpoOptions());
        Assert.Equal(0.5, s.RewardsAccuracies, 5);
    }

    [Fact]
    public void SequenceLogProbs_SumOrLengthAverageOverValidTokens()
    {
        var logp = tensor(new float[] { -1, -2, -9, -4, -9, -9 }).view(2, 3);
        var mask = tensor(new[] { true, true, false, true, false, false }).view(2, 3);
        Assert.Equal(new float[] { -3, -4 }, DpoLoss.SequenceLogProbs(logp, mask).data<float>().ToArray());
        Assert.Equal(new float[] { -1.5f, -4 }, DpoLoss.SequenceLogProbs(logp, mask, lengthAverage: true).data<float>().ToArray());
    }

    [Fact]
    public void Options_RejectBadSettings()
    {
        Assert.Contains("beta must be > 0", Assert.Throws<PpoSharpException>(() => new DpoOptions(Beta: 0).Validate()).Message);
        Assert.Contains("label_smoothing must be in [0, 0.5)", Assert.Throws<PpoSharpException>(() => new DpoOptions(LossType: DpoLossType.Robust, LabelSmoothing: 0.5).Validate()).Message);
        Assert.Contains("not hinge", Assert.Throws<PpoSharpException>(() => new DpoOptions(LossType: DpoLossType.Hinge, LabelSmoothing: 0.1).Validate()).Message);
        Assert.Equal(DpoLossType.Ipo, OptionNames.Parse<DpoLossType>("loss_type", "ipo"));
    }
}
