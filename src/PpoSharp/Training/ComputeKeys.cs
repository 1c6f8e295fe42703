using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// The keys of every trainer's config that trade compute for memory or precision for speed (TRL's names). They sit
/// under <see cref="LoraKeys"/>, so each trainer's config declares them once.
/// </summary>
public abstract record ComputeKeys
{
    /// <summary>
    /// TRL's gradient_checkpointing (default false): each decoder block keeps only its input for the backward pass and
    /// recomputes its activations there: less memory for about one more forward pass of time.
    /// </summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>
    /// TRL's bf16: the decoder's matrix products (forward and backward) and the MLP's activations between them in
    /// bfloat16 from fp32 master weights, which the optimizer and its AdamW moments keep in fp32; the residual stream,
    /// norms, attention, log-probs, losses, advantages and the value head stay fp32. Default (null):
    /// <see cref="DefaultVariable"/> where it is set, else on where the device computes bf16 fast (a GPU, or a CPU with
    /// AVX512-BF16 or AMX), else off.
    /// </summary>
    public bool? Bf16 { get; init; }

    private static bool _said;

    /// <summary>
    /// The environment variable that sets bf16's default (0 or 1) for configs that leave the key unset, in place of the
    /// device's speed at it: for example fp32 everywhere on a mixed set of machines.
    /// </summary>
    public const string DefaultVariable = "PPOSHARP_BF16";

    /// <summary>The default that <see cref="DefaultVariable"/> sets, or null where it is unset; any other value than 0, 1, false or true is a user error.</summary>
    public static bool? DefaultFromEnvironment() => Environment.GetEnvironmentVariable(DefaultVariable) switch
    {
        null or "" => null,
        "0" or "false" => false,
        "1" or "true" => true,
        var v => throw new PpoSharpException($"{DefaultVariable}={v}: expected 0 or 1"),
    };

    /// <summary>
    /// Whether bf16 runs, from the key and whether the device is fast at it, and the one line to say about it: why an
    /// unset key left it off, or that a set one will be slow; null when there is nothing to say.
    /// </summary>
    public static (bool On, string? Note) ResolveBf16(bool? key, bool fast) => (key, fast) switch
    {
        (null, false) => (false, "bf16: off: this CPU has no AVX512-BF16 or AMX, where bf16 matrix products are slower than fp32 (bf16=true forces it)"),
        (true, false) => (true, "bf16: warning: this CPU has no AVX512-BF16 or AMX: bf16 matrix products will be much slower than fp32 here"),
        _ => (key ?? fast, null),
    };

    /// <summary>
    /// Applies these keys to the decoders that <paramref name="trained"/> runs (itself and its submodules), and says once
    /// per process on <paramref name="log"/> what <see cref="ResolveBf16"/> has to say.
    /// </summary>
    internal void ApplyTo(nn.Module trained, TextWriter log)
    {
        var (on, note) = ResolveBf16(Bf16 ?? DefaultFromEnvironment(), ComputeDtypes.FastBf16(trained.parameters().FirstOrDefault()?.device ?? CPU));
        if (note is not null && !_said) { log.WriteLine(note); _said = true; }
        foreach (var decoder in trained.modules().Prepend(trained).OfType<Decoder>())
            (decoder.GradientCheckpointing, decoder.MatmulDtype) = (GradientCheckpointing, on ? ScalarType.BFloat16 : null);
    }
}
