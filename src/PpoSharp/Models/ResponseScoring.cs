using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// The forward pass over prompt + response that every log-probability of a response comes from (rollout, update,
/// evaluation), so that they agree exactly: the first PPO minibatch's ratio is 1.
/// </summary>
public static class ResponseScoring
{
    /// <summary>
    /// log pi(a_t | s_t) (B, N) at the sampling temperature of the N response tokens of <paramref name="sequences"/>
    /// (B, P+N), from the states at positions P-1 .. P+N-2 (the state before each response token), with their entropies
    /// (B, N) when asked, the hidden states (B, P+N, C) and position ids (B, P+N) for heads. The logits are taken in fp32
    /// a chunk of positions at a time (<see cref="Decoder.TokenLogProbs"/>).
    /// </summary>
    public static (Tensor LogProbs, Tensor? Entropy, Tensor Hidden, Tensor Positions) Forward(Decoder model, Tensor sequences, Tensor mask,
        long promptLength, double temperature, bool entropy = false)
    {
        long n = sequences.shape[1] - promptLength;
        var positions = Sampling.PositionIds(mask);                                              // (B, L)
        var hidden = model.Hidden(sequences, positions, mask);                                  // (B, L, C)
        var (logp, h) = model.TokenLogProbs(hidden.narrow(1, promptLength - 1, n), sequences.narrow(1, promptLength, n), temperature, entropy);   // (B, N) x2
        return (logp, h, hidden, positions);
    }

    /// <summary>log pi(a_t | s_t) (B, N) of the response tokens.</summary>
    public static Tensor LogProbs(Decoder model, Tensor sequences, Tensor mask, long promptLength, double temperature) =>
        Forward(model, sequences, mask, promptLength, temperature).LogProbs;
}
