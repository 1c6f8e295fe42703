using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// The forward pass over prompt + response that every log-probability of a response comes from (rollout, update,
/// evaluation), so that they agree exactly: the first PPO minibatch's ratio is 1.
/// </summary>
public static class ResponseScoring
{
    /// <summary>
    /// Logits (B, N, V) at the sampling temperature for the N response tokens of <paramref name="sequences"/> (B, P+N),
    /// read at positions P-1 .. P+N-2 (the state before each response token), with the hidden states (B, P+N, C) and
    /// position ids (B, P+N) for heads.
    /// </summary>
    public static (Tensor Logits, Tensor Hidden, Tensor Positions) Forward(Decoder model, Tensor sequences, Tensor mask, long promptLength, double temperature)
    {
        long n = sequences.shape[1] - promptLength;
        var positions = Sampling.PositionIds(mask);                                              // (B, L)
        var hidden = model.Hidden(sequences, positions, mask);                                  // (B, L, C)
        var logits = model.Logits(hidden.narrow(1, promptLength - 1, n)).to(ScalarType.Float32) / temperature;   // (B, N, V) in fp32
        return (logits, hidden, positions);
    }

    /// <summary>log pi(a_t | s_t) (B, N) of the response tokens.</summary>
    public static Tensor LogProbs(Decoder model, Tensor sequences, Tensor mask, long promptLength, double temperature)
    {
        var (logits, _, _) = Forward(model, sequences, mask, promptLength, temperature);
        return Algorithms.LogProbs.OfActions(logits, sequences.narrow(1, promptLength, logits.shape[1]));
    }
}
