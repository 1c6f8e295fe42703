using PpoSharp.Algorithms;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// Truncated importance sampling of TRL's four modes on hand-picked log-probs. The rollout log-probs are 0 and the
/// trainer's are ln(rho), so each token's weight exp(lp_train - lp_roll) is rho itself:
/// row 0: rho = [2, 0.5, 4], all valid (sequence weight 2 x 0.5 x 4 = 4);
/// row 1: rho = [0.1, 1.5, 9] with the last token masked (sequence weight 0.1 x 1.5 = 0.15; a masked token's d is 0).
/// </summary>
public class RolloutCorrectionTests
{
    private static readonly Tensor Train = tensor(new[] { 2f, 0.5f, 4f, 0.1f, 1.5f, 9f }).log().view(2, 3);   // (2, 3)
    private static readonly Tensor Roll = zeros(2, 3);                                                            // (2, 3)
    private static readonly Tensor Mask = tensor(new[] { true, true, true, true, true, false }).view(2, 3);      // (2, 3)

    private static float[] W(ImportanceSamplingMode mode, double? min, double? max) =>
        RolloutCorrection.Weights(Train, Roll, Mask, mode, min, max).flatten().data<float>().ToArray();

    private static void Close(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-5, $"[{i}] expected {expected[i]}, got {actual[i]}");
    }

    [Fact]
    public void Weights_TokenTruncate_ClampsEachTokenAtClipMaxOnly()
    {
        // min none, max 3: 4 -> 3; 0.1 stays; the masked 9 has d = 0 -> 1
        Close([2, 0.5f, 3, 0.1f, 1.5f, 1], W(ImportanceSamplingMode.TokenTruncate, null, 3));
    }

    [Fact]
    public void Weights_TokenTruncateWithClipMin_RaisesSmallWeights()
    {
        Close([2, 0.5f, 3, 0.2f, 1.5f, 1], W(ImportanceSamplingMode.TokenTruncate, 0.2, 3));
    }

    [Fact]
    public void Weights_TokenMask_ZeroesTokensOutsideTheBounds()
    {
        // [0.2, 3]: 4 and 0.1 are outside -> 0
        Close([2, 0.5f, 0, 0, 1.5f, 1], W(ImportanceSamplingMode.TokenMask, 0.2, 3));
    }

    [Fact]
    public void Weights_SequenceTruncate_OneClampedWeightPerRow()
    {
        Close([3, 3, 3, 0.2f, 0.2f, 0.2f], W(ImportanceSamplingMode.SequenceTruncate, 0.2, 3));     // 4 -> 3, 0.15 -> 0.2
        Close([4, 4, 4, 0.15f, 0.15f, 0.15f], W(ImportanceSamplingMode.SequenceTruncate, null, 5)); // inside: unchanged
    }

    [Fact]
    public void Weights_SequenceMask_ZeroesWholeRowsOutsideTheBounds()
    {
        Close([0, 0, 0, 0.15f, 0.15f, 0.15f], W(ImportanceSamplingMode.SequenceMask, null, 3));     // 4 > 3: row 0 dropped
        Close([4, 4, 4, 0, 0, 0], W(ImportanceSamplingMode.SequenceMask, 0.2, 5));                  // 0.15 < 0.2: row 1 dropped
    }

    [Fact]
    public void LogProbDiff_MeanAndMaxOverValidTokens_NaNRolloutTokensLeftOut()
    {
        // |ln 2| + |ln 0.5| + |ln 4| + |ln 0.1| + |ln 1.5| = 0.693147 + 0.693147 + 1.386294 + 2.302585 + 0.405465 = 5.480639; / 5
        var (mean, max) = RolloutCorrection.LogProbDiff(Train, Roll, Mask);
        Assert.Equal(5.480639 / 5, mean, 1e-5);
        Assert.Equal(2.302585, max, 1e-5);
        // the engine gave no log-prob for row 1's first token (an EOS the client appended): 3.178054 / 4, max ln 4
        var roll = tensor(new[] { 0f, 0, 0, float.NaN, 0, 0 }).view(2, 3);
        (mean, max) = RolloutCorrection.LogProbDiff(Train, roll, Mask);
        Assert.Equal((5.480639 - 2.302585) / 4, mean, 1e-5);
        Assert.Equal(1.386294, max, 1e-5);
    }

    [Fact]
    public void PolicyLossCompute_WithImportanceWeights_ScalesEachTokensLoss()
    {
        // equal policies: ratio 1, per-token loss -A = [-1, -2]; weights [2, 0] -> [-2, 0]; token mean over 2 tokens = -1
        var logp = zeros(1, 2);
        var (loss, _) = PolicyLoss.Compute(logp, logp, tensor(new[] { 1f, 2f }).view(1, 2), ones(1, 2, ScalarType.Bool),
            new PolicyLossOptions(Aggregation: LossAggregation.Bnpo), isWeights: tensor(new[] { 2f, 0f }).view(1, 2));
        Assert.Equal(-1.0, loss.item<float>(), 5);
    }
}
