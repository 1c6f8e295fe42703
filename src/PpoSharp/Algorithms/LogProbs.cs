using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Per-token log-probabilities and entropy from logits.</summary>
public static class LogProbs
{
    /// <summary>log pi(a_t | s_t) = log_softmax(logits)[a_t]: logits (B, T, V), actions (B, T) -> (B, T).</summary>
    public static Tensor OfActions(Tensor logits, Tensor actions) =>
        nn.functional.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1);

    /// <summary>
    /// The notes' entropy H(pi) = -sum_a pi(a|s_t) log pi(a|s_t), per position: logits (B, T, V) -> (B, T).
    /// A uniform distribution over V tokens gives log V.
    /// </summary>
    public static Tensor Entropy(Tensor logits)
    {
        var logp = nn.functional.log_softmax(logits, -1);
        return -(logp.exp() * logp).sum(-1);
    }
}
