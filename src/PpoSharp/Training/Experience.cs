using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// One rollout batch in the buffer (OpenRLHF's Experience). B = prompts, P = padded prompt length, N = response
/// length. Sequences are prompt (left-padded) followed by response (right-padded).
/// </summary>
public sealed record Experience : IDisposable
{
    /// <summary>(B, P+N) token ids.</summary>
    public required Tensor Sequences { get; init; }
    /// <summary>(B, P+N) true at real (non-pad) tokens.</summary>
    public required Tensor AttentionMask { get; init; }
    /// <summary>(B, N) true at generated tokens up to and including EOS.</summary>
    public required Tensor ResponseMask { get; init; }
    /// <summary>(B, N) log pi_old(a_t | s_t), at the sampling temperature.</summary>
    public required Tensor OldLogProbs { get; init; }
    /// <summary>(B, N) log pi_ref(a_t | s_t) of the frozen reference; null when no KL term needs it (critic-free).</summary>
    public Tensor? RefLogProbs { get; init; }
    /// <summary>(B, N) V_old(s_t) of the critic at rollout time; null without a critic (critic-free).</summary>
    public Tensor? OldValues { get; init; }
    /// <summary>(B) sequence score from the reward (after EOS penalty and clipping).</summary>
    public required Tensor Scores { get; init; }
    /// <summary>(B) score of a gold rule reward, logged beside a proxy (model) reward; null without one.</summary>
    public Tensor? GoldScores { get; init; }
    /// <summary>(B) true where the response hit the length cap without EOS.</summary>
    public Tensor? Truncated { get; init; }
    /// <summary>(B) the group (prompt) of each row, row / G: a prompt's G completions are contiguous; 0..B-1 for PPO.</summary>
    public Tensor? GroupIds { get; init; }
    /// <summary>(B, N) tokens the loss counts when not all response tokens do (mask_truncated_completions); null = ResponseMask.</summary>
    public Tensor? LossMask { get; init; }
    /// <summary>(B, N) detached rollout importance weights multiplying the policy loss (<c>vllm_importance_sampling_correction</c>); null = none.</summary>
    public Tensor? IsWeights { get; init; }
    /// <summary>(B, N) per-token rewards: -beta KL_t, plus the score at the last token.</summary>
    public Tensor? Rewards { get; init; }
    /// <summary>(B, N) GAE advantages (whitened if configured).</summary>
    public Tensor? Advantages { get; init; }
    /// <summary>(B, N) returns R_t = A_t + V_old(s_t), the critic's targets.</summary>
    public Tensor? Returns { get; init; }

    public long PromptLength => Sequences.shape[1] - ResponseMask.shape[1];

    /// <summary>The rows <paramref name="index"/> (M) of every field: a minibatch.</summary>
    public Experience Select(Tensor index) => new()
    {
        Sequences = Sequences.index_select(0, index),
        AttentionMask = AttentionMask.index_select(0, index),
        ResponseMask = ResponseMask.index_select(0, index),
        OldLogProbs = OldLogProbs.index_select(0, index),
        RefLogProbs = RefLogProbs?.index_select(0, index),
        OldValues = OldValues?.index_select(0, index),
        Scores = Scores.index_select(0, index),
        GoldScores = GoldScores?.index_select(0, index),
        Rewards = Rewards?.index_select(0, index),
        Advantages = Advantages?.index_select(0, index),
        Returns = Returns?.index_select(0, index),
        Truncated = Truncated?.index_select(0, index),
        GroupIds = GroupIds?.index_select(0, index),
        LossMask = LossMask?.index_select(0, index),
        IsWeights = IsWeights?.index_select(0, index),
    };

    public void Dispose()
    {
        foreach (var t in new[] { Sequences, AttentionMask, ResponseMask, OldLogProbs, RefLogProbs, OldValues, Scores, GoldScores, Rewards, Advantages, Returns, Truncated, GroupIds, LossMask, IsWeights })
            t?.Dispose();
    }
}
