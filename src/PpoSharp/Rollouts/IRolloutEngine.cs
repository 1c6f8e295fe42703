using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Rollouts;

/// <summary>Why a completion ended.</summary>
public enum FinishReason
{
    /// <summary>At an EOS id (included as the completion's last id).</summary>
    Stop,
    /// <summary>At the max_new_tokens cap, without EOS.</summary>
    Length,
}

/// <summary>A batch of token-id prompts to complete, one completion each (a group's G copies are G prompts).</summary>
/// <param name="Prompts">Token ids of each prompt, chat template applied.</param>
/// <param name="Sampling">Temperature, top-k, top-p and the cap on new tokens.</param>
/// <param name="Eos">The ids that end a completion (the tokenizer's EOS ids).</param>
/// <param name="Seed">Seed of this batch; a server request for prompt k gets seed + k.</param>
public sealed record RolloutRequest(IReadOnlyList<IReadOnlyList<int>> Prompts, SamplingOptions Sampling, IReadOnlyList<int> Eos, long Seed);

/// <summary>One completion: token ids (up to and including the first EOS), the engine's log-prob of each id where it gave one
/// (NaN where not; null when the engine gives none), why it ended and the weight version that generated it.</summary>
public sealed record RolloutCompletion(IReadOnlyList<int> Ids, float[]? LogProbs, FinishReason Finish, long WeightVersion)
{
    /// <summary>
    /// A server's completion made independent of how the server treats EOS: the ids are cut after the first EOS id and at
    /// <paramref name="maxNew"/>; a completion the server says stopped (<paramref name="stopped"/>) whose ids hold no EOS
    /// (a server that leaves the matched stop token out) gets <paramref name="matched"/>, or the first EOS id, appended, with
    /// no engine log-prob (NaN). The finish reason is then read from the ids, not from the server.
    /// </summary>
    public static RolloutCompletion FromServer(IReadOnlyList<int> ids, IReadOnlyList<float>? logProbs, bool stopped, int? matched, IReadOnlyList<int> eos, int maxNew, long version)
    {
        var kept = new List<int>(ids.Count + 1);
        var lps = new List<float>(ids.Count + 1);
        bool ended = false;
        for (int i = 0; i < ids.Count && kept.Count < maxNew && !ended; i++)
        {
            kept.Add(ids[i]);
            lps.Add(logProbs is not null && i < logProbs.Count ? logProbs[i] : float.NaN);
            ended = eos.Contains(ids[i]);
        }
        if (!ended && stopped && kept.Count < maxNew && eos.Count > 0)
        {
            kept.Add(matched is int m && eos.Contains(m) ? m : eos[0]);
            lps.Add(float.NaN);
            ended = true;
        }
        return new RolloutCompletion(kept, logProbs is null ? null : [.. lps], ended ? FinishReason.Stop : FinishReason.Length, version);
    }
}

/// <summary>
/// Where rollouts are generated: token-id prompts and sampling settings in; token ids, the engine's log-probs, the finish
/// reason and the weight version out. The trainer never uses the engine's log-probs as PPO's old log-probs (it recomputes
/// them, as verl and OpenRLHF do); they feed the <c>rollout_logprob_diff_*</c> metrics and importance sampling only.
/// </summary>
public interface IRolloutEngine : IDisposable
{
    /// <summary>One completion per prompt of <paramref name="request"/>, in order. Throws <see cref="PpoSharpException"/> with one line when it cannot.</summary>
    IReadOnlyList<RolloutCompletion> Generate(RolloutRequest request);

    /// <summary>The weight version the engine generates with now (the trainer's count of synced updates).</summary>
    long WeightVersion { get; }
}

/// <summary>Completions as the trainer's tensors.</summary>
public static class Completions
{
    /// <summary>
    /// Responses (B, N) right-padded with <paramref name="pad"/>, N the longest completion; a mask (B, N) of the completion's
    /// ids; and the engine log-probs (B, N) with NaN at padding and where the engine gave none (null when no completion has any).
    /// </summary>
    public static (Tensor Responses, Tensor Mask, Tensor? LogProbs) ToTensors(IReadOnlyList<RolloutCompletion> completions, int pad, Device device)
    {
        int b = completions.Count, n = Math.Max(1, completions.Max(c => c.Ids.Count));
        var ids = new long[b * n];
        var mask = new bool[b * n];
        var lps = new float[b * n];
        Array.Fill(ids, pad);
        Array.Fill(lps, float.NaN);
        for (int i = 0; i < b; i++)
            for (int j = 0; j < completions[i].Ids.Count; j++)
            {
                ids[i * n + j] = completions[i].Ids[j];
                mask[i * n + j] = true;
                if (completions[i].LogProbs is { } lp) lps[i * n + j] = lp[j];
            }
        bool any = completions.Any(c => c.LogProbs is not null);
        return (tensor(ids, [b, n], device: device), tensor(mask, [b, n], device: device), any ? tensor(lps, [b, n], device: device) : null);
    }
}
