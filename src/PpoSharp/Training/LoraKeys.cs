namespace PpoSharp.Training;

/// <summary>
/// The LoRA keys of every trainer's config (peft's settings under TRL's <c>lora_</c> names); <see cref="Lora"/> is them
/// as one value, which each config's Validate() checks.
/// </summary>
public abstract record LoraKeys : ComputeKeys
{
    /// <summary>LoRA rank (peft's r); 0, the default, trains every weight. With r &gt; 0 only adapters (and heads) train, on a frozen base.</summary>
    [System.ComponentModel.DataAnnotations.Range(0, 65536)] public int LoraR { get; init; }
    /// <summary>LoRA scale numerator: the adapter adds (lora_alpha / lora_r) B A x (TRL's default 32).</summary>
    public double LoraAlpha { get; init; } = 32;
    /// <summary>Dropout on the adapter's input while training (peft's default 0).</summary>
    public double LoraDropout { get; init; }
    /// <summary>"" for peft's default of the architecture, "all-linear", or comma-separated module names (q_proj,v_proj).</summary>
    public string LoraTargetModules { get; init; } = "";

    /// <summary>
    /// A LoRA run given no lr trains at this multiple of the config's full-model default (LoRA's rule of thumb: about 10x;
    /// TRL's LoRA recipes use about 1e-4 for SFT against 2e-5 for full fine-tuning). At the full-model rate adapters barely move.
    /// </summary>
    public const double DefaultLrScale = 10;

    /// <summary>The LoRA keys as one value.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public Models.LoraSettings Lora => new(LoraR, LoraAlpha, LoraDropout, LoraTargetModules);
}
