using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// <see cref="LeanAdamW"/>'s update of one fp32 CPU parameter in one pass over θ, g, m and v, split over the torch
/// threads for large ones, instead of seven libtorch ops that each read and write whole tensors and allocate two
/// (sqrt(v) and the denominator): at SmolLM2-135M's shape the optimizer step took 70-90 ms against 190-230. Each
/// operation rounds where libtorch's does, in TorchSharp's order: θ·(1-lr λ); m·β₁ then + (1-β₁)g, and v·β₂ then
/// + ((1-β₂)g)g, each one fused multiply-add (libtorch's vectorised add with alpha and addcmul); sqrt(v) / s₂ + ε;
/// θ + (-lr/(1-β₁ᵗ)·m) / denominator. One difference: the square root here is correctly rounded, where libtorch takes
/// it from MKL's vector math library, which is not (an ulp apart in about one value in six), so the weights can
/// differ from TorchSharp's AdamW by an ulp after a step.
/// </summary>
internal static unsafe class AdamWKernel
{
    /// <summary>The update's constants, each rounded to fp32 as libtorch rounds a scalar for an fp32 tensor.</summary>
    public readonly record struct Coefficients(float Decay, float Beta1, float Alpha1, float Beta2, float Alpha2, float Correction2Sqrt, float Eps, float StepSize);

    /// <summary>Whether <see cref="Step"/> applies: parameter, gradient and both moments fp32, contiguous, on the CPU, of one size.</summary>
    public static bool Applies(Tensor p, Tensor g, Tensor m, Tensor v) =>
        Avx2.IsSupported && Fma.IsSupported && new[] { p, g, m, v }.All(t => t.dtype == ScalarType.Float32 && t.device_type == TorchSharp.DeviceType.CPU
            && t.is_contiguous() && t.numel() == p.numel());

    /// <summary>One AdamW step of p with gradient g, updating the moments m and v in place.</summary>
    public static void Step(Tensor p, Tensor g, Tensor m, Tensor v, Coefficients c)
    {
        long n = p.numel();
        nint pp = (nint)RowKernels.Address(p), pg = (nint)RowKernels.Address(g), pm = (nint)RowKernels.Address(m), pv = (nint)RowKernels.Address(v);
        int parts = n >= 1 << 18 ? Math.Max(1, get_num_threads()) : 1;                   // memory-bound: large tensors over the threads
        SpinTeam.Shared.Run(parts, i =>
        {
            long from = n * i / parts & ~7L, to = i == parts - 1 ? n : n * (i + 1) / parts & ~7L;   // vector-aligned shares
            Range((float*)pp, (float*)pg, (float*)pm, (float*)pv, from, to, c);
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Range(float* p, float* g, float* m, float* v, long from, long to, Coefficients c)
    {
        var (decay, beta1, alpha1, beta2) = (Vector256.Create(c.Decay), Vector256.Create(c.Beta1), Vector256.Create(c.Alpha1), Vector256.Create(c.Beta2));
        var (alpha2, s2, eps, size) = (Vector256.Create(c.Alpha2), Vector256.Create(c.Correction2Sqrt), Vector256.Create(c.Eps), Vector256.Create(c.StepSize));
        long i = from;
        for (; i + 8 <= to; i += 8)
        {
            var gi = Vector256.Load(g + i);
            var mi = Vector256.FusedMultiplyAdd(gi, alpha1, Vector256.Load(m + i) * beta1);
            var vi = Vector256.FusedMultiplyAdd(alpha2 * gi, gi, Vector256.Load(v + i) * beta2);
            var denominator = Vector256.Sqrt(vi) / s2 + eps;
            (Vector256.Load(p + i) * decay + size * mi / denominator).Store(p + i);
            mi.Store(m + i);
            vi.Store(v + i);
        }
        for (; i < to; i++)
        {
            m[i] = MathF.FusedMultiplyAdd(g[i], c.Alpha1, m[i] * c.Beta1);
            v[i] = MathF.FusedMultiplyAdd(c.Alpha2 * g[i], g[i], v[i] * c.Beta2);
            p[i] = p[i] * c.Decay + c.StepSize * m[i] / (MathF.Sqrt(v[i]) / c.Correction2Sqrt + c.Eps);
        }
    }
}
