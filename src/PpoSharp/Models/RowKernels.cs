using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// RMSNorm, rotary embeddings, residual adds and SwiGLU's gate of a decode step's few rows (batch x new positions at
/// most <see cref="SmallMatmul.MaxRows"/>) on the CPU without autograd, in fp32 or bf16, as plain loops, on tensors or
/// (for <see cref="DecoderBlock"/>'s fused step) on raw rows. In libtorch each is
/// five to seven small ops: at SmolLM2's shape a norm took 15 us and a rotation 14 us, each called twice per layer and
/// token, about 1.7 ms of a 28 ms batch-1 step. The arithmetic is <see cref="Norm"/>'s and <see cref="Rope"/>'s, rounded to
/// the tensor's dtype wherever libtorch rounds (after each product and sum in bf16). The bf16 conversions and tensor
/// addresses here serve <see cref="SmallMatmul"/>, <see cref="DecodeAttention"/> and <see cref="KvCache"/> too.
/// </summary>
internal static unsafe class RowKernels
{
    /// <summary>
    /// Whether these kernels apply to <paramref name="x"/> (B, T, ...) with <paramref name="other"/> (a norm's weight or a
    /// rotation table): no autograd, CPU, fp32 or bf16 alike, both contiguous, B x T at most <see cref="SmallMatmul.MaxRows"/>.
    /// </summary>
    public static bool Applies(Tensor x, Tensor other) =>
        !is_grad_enabled() && x.device_type == TorchSharp.DeviceType.CPU && x.dim() >= 3 && x.size(0) * x.size(1) <= SmallMatmul.MaxRows
        && x.dtype is ScalarType.Float32 or ScalarType.BFloat16 && other.dtype == x.dtype && x.is_contiguous() && other.is_contiguous();

    /// <summary>
    /// RMSNorm over the last dimension (C) of x (..., C) with weight (C): weight · cast(x₃₂ / sqrt(mean(x₃₂²) + eps)), the
    /// statistics in fp32 as Hugging Face's Llama computes them.
    /// </summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps)
    {
        var y = empty_like(x);
        RmsNorm(Address(x), Address(weight), Address(y), x.numel() / x.size(-1), (int)x.size(-1), eps, x.dtype == ScalarType.BFloat16);
        return y;
    }

    /// <summary><see cref="RmsNorm(Tensor, Tensor, double)"/> on raw rows: x and y (rows, C), weight (C), all fp32 or all bf16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(byte* px, byte* pw, byte* py, long rows, int c, double eps, bool bf16)
    {
        for (long r = 0; r < rows; r++)
        {
            float sum = 0;
            for (int i = 0; i < c; i++)
            {
                float v = Read(px, r * c + i, bf16);
                sum += v * v;
            }
            float scale = 1f / MathF.Sqrt(sum / c + (float)eps);
            for (int i = 0; i < c; i++)
            {
                float normed = Round(Read(px, r * c + i, bf16) * scale, bf16);
                Write(py, r * c + i, Read(pw, i, bf16) * normed, bf16);
            }
        }
    }

    /// <summary>
    /// Rotates, in place, the first <paramref name="count"/> heads of each position of heads (B, T, NH, hd) by the tables
    /// cos and sin (B, T, 1, hd): x' = x cos + rotate_half(x) sin, rotate_half(x) = (-x₂, x₁).
    /// </summary>
    public static void Rotate(Tensor heads, int count, (Tensor Cos, Tensor Sin) table) =>
        Rotate(Address(heads), heads.size(0) * heads.size(1), (int)heads.size(2), (int)heads.size(3), count, Address(table.Cos), Address(table.Sin),
            heads.dtype == ScalarType.BFloat16);

    /// <summary><see cref="Rotate(Tensor, int, ValueTuple{Tensor, Tensor})"/> on raw rows: heads (positions, NH, hd), tables (positions, hd).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rotate(byte* p, long positions, int nh, int hd, int count, byte* pc, byte* ps, bool bf16)
    {
        int half = hd / 2;
        for (long t = 0; t < positions; t++)
            for (int h = 0; h < count; h++)
            {
                long at = (t * nh + h) * hd, tab = t * hd;
                for (int j = 0; j < half; j++)
                {
                    float x1 = Read(p, at + j, bf16), x2 = Read(p, at + j + half, bf16);
                    float a = Round(x1 * Read(pc, tab + j, bf16), bf16), b = Round(-x2 * Read(ps, tab + j, bf16), bf16);
                    float c = Round(x2 * Read(pc, tab + j + half, bf16), bf16), d = Round(x1 * Read(ps, tab + j + half, bf16), bf16);
                    Write(p, at + j, a + b, bf16);
                    Write(p, at + j + half, c + d, bf16);
                }
            }
    }

    /// <summary>y = a + b over <paramref name="count"/> values (y may be a or b), rounded to the dtype as libtorch's add rounds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Add(byte* a, byte* b, byte* y, long count, bool bf16)
    {
        for (long i = 0; i < count; i++) Write(y, i, Read(a, i, bf16) + Read(b, i, bf16), bf16);
    }

    /// <summary>
    /// y[r, j] += cast(u[r, j] scale) for <paramref name="m"/> rows of u (M, cols) into the first cols of each row of y
    /// (row stride <paramref name="width"/>): a LoRA adapter's scaled share added to its slice of a projection's output.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AddScaled(byte* u, int cols, double scale, byte* y, int width, int m, bool bf16)
    {
        for (long r = 0; r < m; r++)
            for (long j = 0; j < cols; j++)
                Write(y, r * width + j, Read(y, r * width + j, bf16) + Round(Read(u, r * cols + j, bf16) * (float)scale, bf16), bf16);
    }

    /// <summary>
    /// g = silu(g) u over <paramref name="count"/> values (a multiple of 8), silu(v) = v / (1 + e^-v) rounded to the dtype
    /// before the product, as libtorch's two ops round (SwiGLU's gate times up).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SiluTimes(byte* g, byte* u, long count, bool bf16)
    {
        if (count % 8 != 0) throw new ArgumentException($"SiluTimes takes a multiple of 8 values (got {count})");
        float* silu = stackalloc float[8];
        for (long i = 0; i < count; i += 8)
        {
            var v = bf16 ? Bf16Reader.Load(g, i) : Fp32Reader.Load(g, i);
            (v / (Vector256<float>.One + Vector256.Exp(-v))).Store(silu);
            for (int j = 0; j < 8; j++) Write(g, i + j, Round(silu[j], bf16) * Read(u, i + j, bf16), bf16);
        }
    }

    /// <summary>The address of a CPU tensor's first element, also of a view (which the strides then walk).</summary>
    public static byte* Address(Tensor t)
    {
        if (t.dtype == ScalarType.Float32)
        {
            using var storage = t.storage<float>();                              // the storage's data, past the view's offset
            return (byte*)((float*)storage.data_ptr() + t.storage_offset());
        }
        if (t.is_contiguous()) fixed (byte* bits = t.bytes) return bits;   // a span over the tensor's own memory (bf16 has no storage type)
        using var first = t.as_strided([1], [1], t.storage_offset());        // the first element alone: contiguous
        fixed (byte* bits = first.bytes) return bits;
    }

    private static float Read(byte* p, long i, bool bf16) => bf16 ? Bf16Reader.Read(p, i) : Fp32Reader.Read(p, i);

    private static void Write(byte* p, long i, float v, bool bf16)
    {
        if (bf16) ((ushort*)p)[i] = ToBf16(v);
        else ((float*)p)[i] = v;
    }

    private static float Round(float v, bool bf16) => bf16 ? FromBf16(ToBf16(v)) : v;

    internal static float FromBf16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>count bf16 values at <paramref name="source"/> as fp32 into <paramref name="target"/>; returns target.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float* Widen(byte* source, float* target, long count)
    {
        for (long i = 0; i < count; i++) target[i] = Bf16Reader.Read(source, i);
        return target;
    }

    /// <summary>count fp32 values rounded to bf16 (<see cref="ToBf16"/>) into <paramref name="target"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Narrow(float* source, ushort* target, long count)
    {
        for (long i = 0; i < count; i++) target[i] = ToBf16(source[i]);
    }

    /// <summary>fp32 to bf16, rounding to nearest even as libtorch does (one formula with the GGUF writer's).</summary>
    private static ushort ToBf16(float v) => Export.GgmlEncoding.ToBf16(v);
}

/// <summary>How a kernel reads a tensor's values as fp32: the JIT compiles one copy of the kernel per reader.</summary>
internal unsafe interface IRowReader
{
    /// <summary>The values at index <paramref name="i"/> .. i + 7 of <paramref name="p"/>, as fp32.</summary>
    static abstract Vector256<float> Load(void* p, long i);

    /// <summary>The value at index <paramref name="i"/>, as fp32.</summary>
    static abstract float Read(void* p, long i);
}

internal readonly unsafe struct Fp32Reader : IRowReader
{
    public static Vector256<float> Load(void* p, long i) => Vector256.Load((float*)p + i);
    public static float Read(void* p, long i) => ((float*)p)[i];
}

/// <summary>bf16 is the upper half of an fp32: widen each 16-bit value and shift it up.</summary>
internal readonly unsafe struct Bf16Reader : IRowReader
{
    public static Vector256<float> Load(void* p, long i) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)p + i), 16).AsSingle();
    public static float Read(void* p, long i) => RowKernels.FromBf16(((ushort*)p)[i]);
}
