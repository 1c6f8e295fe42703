using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Per-token rewards of a response from its sequence score and the KL penalty.</summary>
public static class RewardShaping
{
    /// <summary>
    /// r_t = -beta * KL_t at every response token, plus the score at the last response token (the one that ended the
    /// response: EOS, or the last token when the length cap was hit). kl (B, T), mask (B, T), scores (B) -> (B, T),
    /// zero at masked positions.
    /// </summary>
    public static Tensor Rewards(Tensor scores, Tensor kl, Tensor mask, double beta)
    {
        var m = mask.to(kl.dtype);
        var rewards = -beta * kl * m;                                              // (B, T)
        var last = LastIndex(mask).unsqueeze(1);                                   // (B, 1) index of the last token
        return rewards.scatter_add(1, last, scores.to(kl.dtype).unsqueeze(1));
    }

    /// <summary>Index of the last response token per row: (B, T) mask -> (B).</summary>
    public static Tensor LastIndex(Tensor mask) => (mask.to(ScalarType.Int64).sum(1) - 1).clamp_min(0);
}
