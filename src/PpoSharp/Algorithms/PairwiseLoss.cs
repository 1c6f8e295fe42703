using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Bradley-Terry preference loss for reward models (Stiennon et al. 2020; Ouyang et al. 2022).</summary>
public static class PairwiseLoss
{
    /// <summary>
    /// loss = mean(-log sigmoid(r_chosen - r_rejected - margin)); accuracy = share of pairs with r_chosen > r_rejected;
    /// reward_margin = mean(r_chosen - r_rejected). chosen, rejected, margin (B).
    /// </summary>
    public static (Tensor Loss, double Accuracy, double RewardMargin) Compute(Tensor chosen, Tensor rejected, Tensor? margin = null)
    {
        using var scope = NewDisposeScope();
        var diff = chosen - rejected;                                                 // (B)
        var loss = -nn.functional.logsigmoid(margin is null ? diff : diff - margin).mean();
        double accuracy = diff.gt(0).to(ScalarType.Float32).mean().item<float>();
        double rewardMargin = diff.mean().item<float>();
        return (loss.MoveToOuterDisposeScope(), accuracy, rewardMargin);
    }
}
