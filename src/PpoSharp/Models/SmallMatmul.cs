using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// y = x Wᵀ + b for a decode step's few rows (at most <see cref="MaxRows"/>) on the CPU in fp32 or bf16 without
/// autograd: each weight row is read once, against eight input rows at a time or one (256-bit fused multiply-adds in
/// fp32). At these shapes libtorch's BLAS (MKL) spends its time elsewhere: <c>perf</c> of a SmolLM2-shape
/// decode put a batch-1 step 35% in MKL's generic <c>sgemv</c> on one thread (about 8 GB/s, while the second torch
/// thread spun), and a batch-8 share 47% in copying the weights into MKL's packed layout before 24% of arithmetic.
/// SmolLM2's LM head (49,152 x 576) at one row: 5.0 ms here against libtorch's 12.1 (one thread each); at eight rows
/// 16.1 against 21.3 ms. At 16 rows libtorch was faster (383 against 599 us for a 1,536 x 576 weight): more rows go to it.
/// With <see cref="Parts"/> above 1 (set by the caller for its thread), the weight rows are split over that many threads.
/// </summary>
internal static unsafe class SmallMatmul
{
    /// <summary>The most input rows (batch x new positions) this kernel takes; more go to libtorch.</summary>
    public const int MaxRows = 8;

    [ThreadStatic] private static int t_parts;

    /// <summary>Threads that share a product's weight rows, for products called on this thread (default 1: this thread only).</summary>
    public static int Parts { get => Math.Max(1, t_parts); set => t_parts = value; }

    /// <summary>
    /// Whether <see cref="Forward"/> applies: fp32 or bf16 (input and weight alike) on the CPU, no autograd, few rows, K a
    /// multiple of 8, a contiguous weight (N, K).
    /// </summary>
    public static bool Applies(Tensor x, Tensor weight) =>
        !is_grad_enabled() && Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported    // first: training's forward stops here
        && x.device_type == TorchSharp.DeviceType.CPU && Suits(weight, null, x.dtype)
        && x.size(-1) == weight.size(1) && x.numel() <= MaxRows * weight.size(1);              // size(i), not shape: no array per call

    /// <summary>Whether a weight (N, K) and bias (N) or none suit <see cref="Product"/> for rows in <paramref name="dtype"/>: that dtype (fp32 or bf16), contiguous, K a multiple of 8.</summary>
    public static bool Suits(Tensor weight, Tensor? bias, ScalarType dtype) =>
        weight.dtype == dtype && dtype is ScalarType.Float32 or ScalarType.BFloat16 && weight.dim() == 2
        && weight.size(1) % Vector256<float>.Count == 0 && weight.is_contiguous() && (bias is null || bias.dtype == dtype);

    /// <summary>
    /// x (..., K), weight (N, K), bias (N) or none: y (..., N) in x's dtype. bf16 weights are widened to fp32 as they
    /// are read (half the bytes of fp32), bf16 inputs and bias once into this thread's buffers, and the sums (fp32)
    /// rounded to bf16 at the end, as libtorch's bf16 products do (here without two casts through libtorch per product).
    /// </summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        int k = (int)weight.size(1), n = (int)weight.size(0), m = (int)(x.numel() / k);
        using var xc = x.contiguous();
        var y = empty([.. x.shape[..^1], n], x.dtype);
        Product(RowKernels.Address(xc), m, weight, bias, RowKernels.Address(y), x.dtype == ScalarType.BFloat16);
        return y;
    }

    /// <summary>
    /// <see cref="Forward"/> on raw rows: x (M, K) at <paramref name="px"/> into y (M, N) at <paramref name="py"/>, both
    /// contiguous, bf16 where <paramref name="bf16"/> and else fp32 (the weight's dtype, <see cref="Suits"/>), for callers
    /// that keep a step's rows in their own buffers (<see cref="DecoderBlock"/>'s fused decode step).
    /// </summary>
    public static void Product(byte* px, int m, Tensor weight, Tensor? bias, byte* py, bool bf16)
    {
        int k = (int)weight.size(1), n = (int)weight.size(0);
        fixed (float* xs = bf16 ? Buffer(ref t_input, m * k) : null, ys = bf16 ? Buffer(ref t_output, m * n) : null,
               bs = bias?.dtype == ScalarType.BFloat16 ? Buffer(ref t_bias, n) : null)
        {
            nint x32 = (nint)(bf16 ? RowKernels.Widen(px, xs, m * k) : (float*)px);
            nint pb = bias is null ? 0 : (nint)(bs is null ? (float*)RowKernels.Address(bias) : RowKernels.Widen(RowKernels.Address(bias), bs, n));
            nint y32 = (nint)(bf16 ? ys : (float*)py), pw = (nint)RowKernels.Address(weight);
            int parts = Math.Min(Parts, n / 256 + 1);
            Action<int> part = weight.dtype == ScalarType.BFloat16
                ? i => Rows<Bf16Reader>((float*)x32, m, k, (void*)pw, (float*)pb, (float*)y32, n, n * i / parts, n * (i + 1) / parts)
                : i => Rows<Fp32Reader>((float*)x32, m, k, (void*)pw, (float*)pb, (float*)y32, n, n * i / parts, n * (i + 1) / parts);
            if (parts <= 1) part(0);
            else SpinTeam.Shared.Run(parts, part);
            if (bf16) RowKernels.Narrow(ys, (ushort*)py, (long)m * n);
        }
    }

    [ThreadStatic] private static float[]? t_input, t_output, t_bias;

    /// <summary>This thread's buffer of at least <paramref name="count"/> floats in <paramref name="slot"/>.</summary>
    private static float[] Buffer(ref float[]? slot, long count) => slot is { } b && b.Length >= count ? b : slot = new float[count];

    /// <summary>
    /// Output columns [<paramref name="from"/>, <paramref name="to"/>) of y (M, N), one weight row at a time: a single
    /// stream through memory (four rows read side by side streamed at 13 GB/s where one row at a time reached 21, as
    /// fast as a plain sum), against eight input rows at a time, then one (the weight row then comes from the L1 cache).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows<TW>(float* x, int m, int k, void* w, float* bias, float* y, int n, int from, int to) where TW : struct, IRowReader
    {
        for (int j = from; j < to; j++)
        {
            long wj = (long)j * k;
            float b = bias is null ? 0 : bias[j];
            int i = 0;
            for (; i + 8 <= m; i += 8) Dot8<TW>(x + i * k, k, w, wj, y + i * n + j, n, b);
            for (; i < m; i++) y[i * n + j] = (typeof(TW) == typeof(Bf16Reader) && Wide && k % 16 == 0 ? DotBf16x16(x + i * k, (ushort*)w + wj, k) : Dot<TW>(x + i * k, w, wj, k)) + b;
        }
    }

    /// <summary>y[r * n] = x_r · w + b for eight input rows x_r (stride k) and one weight row w: eight independent sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot8<TW>(float* x, int k, void* w, long wi, float* y, int n, float b) where TW : struct, IRowReader
    {
        float* x0 = x, x1 = x0 + k, x2 = x1 + k, x3 = x2 + k, x4 = x3 + k, x5 = x4 + k, x6 = x5 + k, x7 = x6 + k;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int c = 0; c < k; c += 8)
        {
            var wc = TW.Load(w, wi + c);
            a0 = Fma(Vector256.Load(x0 + c), wc, a0);
            a1 = Fma(Vector256.Load(x1 + c), wc, a1);
            a2 = Fma(Vector256.Load(x2 + c), wc, a2);
            a3 = Fma(Vector256.Load(x3 + c), wc, a3);
            a4 = Fma(Vector256.Load(x4 + c), wc, a4);
            a5 = Fma(Vector256.Load(x5 + c), wc, a5);
            a6 = Fma(Vector256.Load(x6 + c), wc, a6);
            a7 = Fma(Vector256.Load(x7 + c), wc, a7);
        }
        Store(Sums(a0, a1, a2, a3) + Vector128.Create(b), y, n);
        Store(Sums(a4, a5, a6, a7) + Vector128.Create(b), y + 4 * n, n);
    }

    /// <summary>The four horizontal sums [Σa0, Σa1, Σa2, Σa3].</summary>
    private static Vector128<float> Sums(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3)
    {
        var h = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));   // per 128-bit half: partial sums of 0-3
        return h.GetLower() + h.GetUpper();
    }

    /// <summary>s's four values to y[0], y[n], y[2n], y[3n] (one output column of four rows).</summary>
    private static void Store(Vector128<float> s, float* y, int n) =>
        (y[0], y[n], y[2 * n], y[3 * n]) = (s.GetElement(0), s.GetElement(1), s.GetElement(2), s.GetElement(3));

    /// <summary>x · w over k (a multiple of 8): four independent sums over 32 columns at a time, then 8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot<TW>(float* x, void* w, long wi, int k) where TW : struct, IRowReader
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int c = 0;
        for (; c + 32 <= k; c += 32)
        {
            a0 = Fma(Vector256.Load(x + c), TW.Load(w, wi + c), a0);
            a1 = Fma(Vector256.Load(x + c + 8), TW.Load(w, wi + c + 8), a1);
            a2 = Fma(Vector256.Load(x + c + 16), TW.Load(w, wi + c + 16), a2);
            a3 = Fma(Vector256.Load(x + c + 24), TW.Load(w, wi + c + 24), a3);
        }
        for (; c < k; c += 8) a0 = Fma(Vector256.Load(x + c), TW.Load(w, wi + c), a0);
        return Vector256.Sum(a0 + a1 + (a2 + a3));
    }

    private static readonly bool Wide = Avx512F.IsSupported;

    /// <summary>
    /// x · w over k (a multiple of 16) for a bf16 row w with 512-bit registers, sixteen weights widened per instruction:
    /// a single-row sum over SmolLM2-sized bf16 rows read 21-23 GB/s this way against 19-22 with 256-bit registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotBf16x16(float* x, ushort* w, int k)
    {
        Vector512<float> a0 = default, a1 = default;
        int c = 0;
        for (; c + 32 <= k; c += 32)
        {
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + c), Widen16(w + c), a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(x + c + 16), Widen16(w + c + 16), a1);
        }
        for (; c < k; c += 16) a0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + c), Widen16(w + c), a0);
        return Vector512.Sum(a0 + a1);
    }

    private static Vector512<float> Widen16(ushort* w) => Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load(w)), 16).AsSingle();

    private static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
}
