using System.Text.Json.Serialization;
using PpoSharp.Algorithms;
using PpoSharp.Rollouts;

namespace PpoSharp.Training;

/// <summary>
/// The rollout keys of the online trainers (PPO and the critic-free ones): where generation runs, how new weights reach
/// it, how stale a rollout may be, and TRL's rollout importance-sampling correction. <see cref="Rollout"/> is them as one
/// value. They sit on top of <see cref="LoraKeys"/>, so PpoConfig and GrpoConfig declare each key once.
/// </summary>
public abstract record RolloutKeys : LoraKeys
{
    /// <summary>local (the trainer's own sampler, the default), sglang (SGLang's native /generate) or vllm (vLLM's /v1/completions).</summary>
    public RolloutEngineKind RolloutEngine { get; init; } = RolloutEngineKind.Local;
    /// <summary>Base URLs of the inference servers (a fleet), e.g. ["http://10.0.0.5:30000"]; needed by sglang and vllm.</summary>
    public List<string> RolloutUrls { get; init; } = [];
    /// <summary>disk (an HF folder per update, SGLang /update_weights_from_disk) or lora (the adapter folder, load_lora_adapter).</summary>
    public WeightSyncKind WeightSync { get; init; } = WeightSyncKind.Disk;
    /// <summary>Where the synced weights are written: a folder every server can read (shared disk); "" = the run's <c>weight_sync/</c>.</summary>
    public string WeightSyncDir { get; init; } = "";
    /// <summary>
    /// TRL AsyncGRPO's key: 0 (default) generates, then trains; N &gt;= 1 generates the next batch while the trainer updates,
    /// and drops a rollout made by weights more than N versions old.
    /// </summary>
    public int MaxStaleness { get; init; }
    /// <summary>Seconds one generation request may take before the worker counts as failed and its prompts go to another.</summary>
    public double RolloutTimeout { get; init; } = 600;
    /// <summary>Multiply the policy loss by truncated importance weights exp(log pi_old - log pi_rollout) (TRL's default true); only when the engine returns log-probs (not local).</summary>
    public bool VllmImportanceSamplingCorrection { get; init; } = true;
    /// <summary>token_truncate, token_mask, sequence_truncate or sequence_mask (TRL's field default).</summary>
    public ImportanceSamplingMode VllmImportanceSamplingMode { get; init; } = ImportanceSamplingMode.SequenceMask;
    /// <summary>C_max of the importance weight (TRL 3.0).</summary>
    public double VllmImportanceSamplingClipMax { get; init; } = 3.0;
    /// <summary>C_min of the importance weight; null = no lower bound (TRL's default).</summary>
    public double? VllmImportanceSamplingClipMin { get; init; }

    /// <summary>The rollout keys as one value.</summary>
    [JsonIgnore]
    public RolloutSettings Rollout => new(RolloutEngine, RolloutUrls, WeightSync, WeightSyncDir, MaxStaleness, RolloutTimeout,
        VllmImportanceSamplingCorrection, VllmImportanceSamplingMode, VllmImportanceSamplingClipMin, VllmImportanceSamplingClipMax);
}
