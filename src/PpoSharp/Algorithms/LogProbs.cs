using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Algorithms;

/// <summary>Per-token log-probabilities and entropy from logits, or from hidden states and the LM head in chunks.</summary>
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

    /// <summary>Bytes of fp32 logits one chunk of <see cref="FromHidden"/> may hold (64 MiB: 341 positions of SmolLM2's 49,152-token vocabulary).</summary>
    public const long ChunkBytes = 64L << 20;

    /// <summary>
    /// <see cref="OfActions"/> and (with <paramref name="entropy"/>) <see cref="Entropy"/> of the logits
    /// z_t = (W h_t) / τ, computed in fp32 from the final hidden states (..., C), the LM head's weight W (V, C) and the
    /// actions (...) without ever holding the logits of every position: the positions are taken <paramref name="chunk"/>
    /// at a time (default: <see cref="ChunkBytes"/> of logits), and each chunk's logits are recomputed in the backward
    /// pass (<see cref="Checkpoint"/>) instead of being kept. Each chunk runs the same ops as the whole, so the values
    /// and gradients equal the unchunked ones. Returns (...) log-probs and (...) entropies (null unless asked).
    /// </summary>
    public static (Tensor LogProbs, Tensor? Entropy) FromHidden(Tensor hidden, Tensor head, Tensor actions, double temperature = 1,
        bool entropy = false, long chunk = 0)
    {
        var h = hidden.reshape(-1, hidden.shape[^1]);                                          // (N, C)
        var a = actions.reshape(-1);                                                           // (N)
        long n = a.shape[0], v = head.shape[0];
        if (chunk <= 0) chunk = Math.Max(1, ChunkBytes / (4 * v));
        var (logps, entropies) = (new List<Tensor>(), new List<Tensor>());
        long start = 0;
        do                                                                                     // once at least: no positions give (0) with a graph
        {
            long len = Math.Min(chunk, n - start);
            var outputs = Checkpoint.Run(x => Chunk(x[0]!, x[1]!, x[2]!, temperature, entropy), h.narrow(0, start, len), head, a.narrow(0, start, len));
            logps.Add(outputs[0]);                                                             // (n)
            if (entropy) entropies.Add(outputs[1]);                                            // (n)
            start += chunk;
        } while (start < n);
        var logp = (logps.Count == 1 ? logps[0] : cat(logps)).view(actions.shape);           // (...)
        return (logp, entropy ? (entropies.Count == 1 ? entropies[0] : cat(entropies)).view(actions.shape) : null);
    }

    /// <summary>One chunk: logits (n, V) in fp32, then their log-probs of the actions (n) and entropies (n).</summary>
    private static Tensor[] Chunk(Tensor hidden, Tensor head, Tensor actions, double temperature, bool entropy)
    {
        var logits = nn.functional.linear(hidden, head).to(ScalarType.Float32) / temperature;  // (n, V)
        var logp = OfActions(logits, actions);                                                 // (n)
        return entropy ? [logp, Entropy(logits)] : [logp];
    }
}
