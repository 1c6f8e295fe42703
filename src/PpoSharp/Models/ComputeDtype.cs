using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// The dtype a model computes in. <see cref="Auto"/> is fp32 on the CPU, whatever the checkpoint stores: bf16 is fast
/// only on CPUs with AVX512-BF16 or AMX (on AVX2 libtorch's bf16 matmul is tens of times slower than fp32), and fp32
/// reproduces reference logits to 1e-4. <see cref="BFloat16"/> halves the bytes a decode step reads (1.9x the tokens/s at
/// SmolLM2-135M's shape on an AVX512-BF16 CPU); sampling and log-probabilities still run in fp32.
/// </summary>
public enum ComputeDtype { Auto, Float32, BFloat16 }

public static class ComputeDtypes
{
    /// <summary>Whether the CPU has AVX512-BF16 or AMX (the avx512_bf16 / amx_bf16 flags of /proc/cpuinfo): only then are libtorch's bf16 matmuls fast on it.</summary>
    public static bool CpuHasBf16 { get; } = OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo")
        && File.ReadAllText("/proc/cpuinfo") is var info && (info.Contains(" avx512_bf16", StringComparison.Ordinal) || info.Contains(" amx_bf16", StringComparison.Ordinal));

    /// <summary>Whether <paramref name="device"/> computes bf16 matrix products fast: a GPU, or a CPU with <see cref="CpuHasBf16"/>.</summary>
    public static bool FastBf16(Device device) => device.type != DeviceType.CPU || CpuHasBf16;

    public static ScalarType Resolve(this ComputeDtype dtype, Decoder model) => dtype switch
    {
        ComputeDtype.BFloat16 => ScalarType.BFloat16,
        ComputeDtype.Float32 => ScalarType.Float32,
        _ => model.Embeddings.device_type != TorchSharp.DeviceType.CPU && model.Format.StoredDtype == ScalarType.BFloat16 ? ScalarType.BFloat16 : ScalarType.Float32,
    };

    /// <summary>Casts the model's weights to the resolved dtype (for inference: generate, eval).</summary>
    public static Decoder ComputeIn(this Decoder model, ComputeDtype dtype)
    {
        var type = dtype.Resolve(model);
        if (model.Embeddings.dtype != type) model.to(type);
        return model;
    }
}
