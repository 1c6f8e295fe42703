using PpoSharp.Algorithms;

namespace PpoSharp.Rollouts;

/// <summary>Where rollouts are generated.</summary>
public enum RolloutEngineKind
{
    /// <summary>In the trainer's process, with its own sampler.</summary>
    Local,
    /// <summary>SGLang servers (or <c>ppo-sharp serve</c>): native <c>POST /generate</c> with <c>input_ids</c>.</summary>
    Sglang,
    /// <summary>vLLM servers (or <c>ppo-sharp serve</c>): <c>POST /v1/completions</c> with token-id prompts and <c>return_token_ids</c>.</summary>
    Vllm,
}

/// <summary>How new weights reach the servers.</summary>
public enum WeightSyncKind
{
    /// <summary>The whole policy as an HF folder (LoRA merged), loaded with SGLang's <c>/update_weights_from_disk</c>.</summary>
    Disk,
    /// <summary>The LoRA adapter folder only: vLLM <c>/v1/load_lora_adapter</c> (load_inplace) or SGLang <c>/load_lora_adapter</c>.</summary>
    Lora,
}

/// <summary>The rollout keys of <see cref="Training.RolloutKeys"/> as one value.</summary>
public sealed record RolloutSettings(RolloutEngineKind Engine, IReadOnlyList<string> Urls, WeightSyncKind WeightSync, string WeightSyncDir,
    int MaxStaleness, double TimeoutSeconds, bool IsCorrection, ImportanceSamplingMode IsMode, double? IsClipMin, double? IsClipMax)
{
    /// <summary>Whether rollouts come from servers.</summary>
    public bool Remote => Engine != RolloutEngineKind.Local;

    /// <summary>Range and combination checks, naming the key; <paramref name="lora"/>: whether the run trains LoRA adapters.</summary>
    public RolloutSettings Validate(bool lora)
    {
        if (MaxStaleness < 0) throw new PpoSharpException($"max_staleness must be >= 0 (got {MaxStaleness})");
        if (!(TimeoutSeconds > 0)) throw new PpoSharpException($"rollout_timeout must be > 0 seconds (got {TimeoutSeconds})");
        if (IsClipMax is double hi && !(hi > 0)) throw new PpoSharpException($"vllm_importance_sampling_clip_max must be > 0 (got {hi})");
        if (IsClipMin is double lo && !(lo >= 0 && lo <= (IsClipMax ?? double.MaxValue)))
            throw new PpoSharpException($"vllm_importance_sampling_clip_min must be in [0, clip_max] (got {lo})");
        if (!Remote)
        {
            if (Urls.Count > 0) throw new PpoSharpException("rollout_urls is set but rollout_engine is local: set rollout_engine=sglang or vllm to use the servers");
            if (MaxStaleness > 0) throw new PpoSharpException("max_staleness overlaps server generation with training: it needs rollout_engine=sglang or vllm");
            return this;
        }
        if (Urls.Count == 0) throw new PpoSharpException($"rollout_engine={Engine.ToString().ToLowerInvariant()} needs rollout_urls, e.g. --set rollout_urls=[\"http://127.0.0.1:30000\"]");
        foreach (var url in Urls)
            if (!Uri.TryCreate(url, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https"))
                throw new PpoSharpException($"rollout_urls: '{url}' is not an http(s) URL");
        if (Engine == RolloutEngineKind.Vllm && WeightSync == WeightSyncKind.Disk)
            throw new PpoSharpException("weight_sync=disk with rollout_engine=vllm: vLLM has no HTTP endpoint that loads full weights from disk; train LoRA (lora_r > 0) with weight_sync=lora, or use rollout_engine=sglang");
        if (WeightSync == WeightSyncKind.Lora && !lora)
            throw new PpoSharpException("weight_sync=lora sends only LoRA adapters: set lora_r > 0, or use weight_sync=disk with rollout_engine=sglang");
        return this;
    }
}
