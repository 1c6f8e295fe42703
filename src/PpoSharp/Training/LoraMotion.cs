using PpoSharp.Models;

namespace PpoSharp.Training;

/// <summary>
/// Warns once, at a LoRA run's first checkpoint, when the adapters have barely moved: B starts at zero (peft's
/// initialisation), and AdamW moves each weight by about lr a step, so a largest |B| below <see cref="StillBelow"/> after
/// training steps means the learning rate is too low for LoRA to change the model (the full-model rate, typically).
/// </summary>
public sealed class LoraMotion(TextWriter log, string title, double lr)
{
    public const double StillBelow = 1e-4;
    private bool _checked;

    /// <summary>Checks <paramref name="adapter"/> (null: a full-model run, nothing to check) the first time it is called.</summary>
    public void AfterCheckpoint(LoraAdapter? adapter, int step)
    {
        if (_checked || adapter is null) return;
        _checked = true;
        double max = adapter.MaxAbsB();
        if (max < StillBelow)
            log.WriteLine($"warning: {title}: the LoRA adapters barely moved by step {step} (largest |B| {max:G2}, below {StillBelow:G}): lr {lr:G3} is likely too low for LoRA, which usually takes about 10x the full-model rate");
    }
}
