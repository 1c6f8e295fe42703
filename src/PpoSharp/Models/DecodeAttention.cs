using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// Attention of one new query per row over the KV cache, on the CPU in fp32 or bf16 (read as fp32, the output rounded
/// to bf16) without autograd, on the calling thread:
/// y = softmax(q Kᵀ / sqrt(hd) + mask) V for every (row, head), reading each cached key and value once with 256-bit
/// fused multiply-adds, eight keys at a time. It serves the single-threaded generation workers of <see cref="Sampling"/>,
/// where a decode step at batch 64 is mostly reading the cache and scaled_dot_product_attention's CPU kernel (one BLAS
/// matrix-vector product per row and head) is slower: the bench model's batch-64 decode step took 14.4 ms with this
/// loop against 17.5 ms with SDPA in the same two workers; in bf16 at batch 1 (9 heads, 48 cached positions) SDPA with
/// the repeated key/value heads took 105 us a layer where this takes about 20. Anything else (training, several threads per op, other
/// devices, dtypes or head sizes) keeps SDPA.
/// </summary>
internal static unsafe class DecodeAttention
{
    /// <summary>Whether <see cref="Forward(Tensor, Tensor, Tensor?)"/> applies: one query, fp32 or bf16 alike on the CPU, no autograd, one thread, head size a multiple of 8.</summary>
    public static bool Applies(Tensor q, Tensor kv, Tensor? mask) =>
        q.size(2) == 1 && q.device_type == TorchSharp.DeviceType.CPU && q.dtype is ScalarType.Float32 or ScalarType.BFloat16 && kv.dtype == q.dtype
        && (mask is null || mask.dtype == q.dtype)
        && q.size(3) % Vector256<float>.Count == 0 && q.stride(3) == 1 && kv.stride(4) == 1
        && Avx2.IsSupported && Fma.IsSupported && !is_grad_enabled() && get_num_threads() == 1;

    /// <summary>
    /// q (B, H, 1, hd), keys and values kv (2, B, KV, L, hd) (query head j reads key/value head j / (H / KV)), an
    /// optional additive mask (B, 1, 1, L) of 0 and -inf; returns y (B, H, 1, hd), a view of a (B, 1, H, hd) buffer so
    /// that the caller's transpose to (B, 1, C) is free.
    /// </summary>
    public static Tensor Forward(Tensor q, Tensor kv, Tensor? mask)
    {
        int b = (int)q.size(0), heads = (int)q.size(1), hd = (int)q.size(3);
        var y = empty([b, 1, heads, hd], q.dtype);
        var keys = new KvView(RowKernels.Address(kv), kv.stride(0), kv.stride(1), kv.stride(2), kv.stride(3), (int)kv.size(2), (int)kv.size(3));
        Forward(RowKernels.Address(q), q.stride(0), q.stride(1), b, heads, hd, keys, MaskView.Of(mask), RowKernels.Address(y), q.dtype == ScalarType.BFloat16);
        return y.transpose(1, 2);
    }

    /// <summary>Keys and values in memory: element strides of the part (keys, values), row, key/value head and position; the heads and positions stored.</summary>
    public readonly struct KvView(byte* data, long part, long row, long head, long pos, int heads, int length)
    {
        public readonly byte* Data = data;
        public readonly long Part = part, Row = row, Head = head, Pos = pos;
        public readonly int Heads = heads, Length = length;
    }

    /// <summary>An additive mask of 0 and -inf in memory (none where Data is null): element strides of a row and a position.</summary>
    public readonly struct MaskView(byte* data, long row, long pos)
    {
        public readonly byte* Data = data;
        public readonly long Row = row, Pos = pos;

        /// <summary>The view of a mask (B, 1, 1, L) or none.</summary>
        public static MaskView Of(Tensor? mask) => mask is null ? default : new(RowKernels.Address(mask), mask.stride(0), mask.stride(3));
    }

    /// <summary>
    /// <see cref="Forward(Tensor, Tensor, Tensor?)"/> on raw memory: queries at element row * qRow + head * qHead of
    /// <paramref name="pq"/>, y (B, 1, H, hd) contiguous at <paramref name="py"/>, all in one dtype (bf16 where <paramref name="bf16"/>).
    /// </summary>
    public static void Forward(byte* pq, long qRow, long qHead, int b, int heads, int hd, KvView kv, MaskView mask, byte* py, bool bf16)
    {
        if (!bf16)
        {
            Attend<Fp32Reader>(pq, qRow, qHead, b, heads, hd, kv, mask, (float*)py);
            return;
        }
        long count = (long)b * heads * hd;
        fixed (float* buffer = t_sums is { } t && t.Length >= count ? t : t_sums = new float[count])   // bf16: fp32 sums, rounded once at the end
        {
            Attend<Bf16Reader>(pq, qRow, qHead, b, heads, hd, kv, mask, buffer);
            RowKernels.Narrow(buffer, (ushort*)py, count);
        }
    }

    [ThreadStatic] private static float[]? t_sums;

    /// <summary>Every (row, head) of <see cref="Forward(Tensor, Tensor, Tensor?)"/> into y (B, 1, H, hd) in fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Attend<TR>(byte* pq, long qRow, long qHead, int b, int heads, int hd, KvView kv, MaskView mask, float* py) where TR : struct, IRowReader
    {
        int length = kv.Length, group = heads / kv.Heads;
        Span<float> buffer = length + hd <= 4096 ? stackalloc float[length + hd] : new float[length + hd];
        fixed (float* scores = buffer)
        {
            float* query = scores + length;                                     // one query head as fp32
            for (int row = 0; row < b; row++)
                for (int head = 0; head < heads; head++)
                {
                    for (int c = 0; c < hd; c++) query[c] = TR.Read(pq, row * qRow + head * qHead + c);
                    long k = row * kv.Row + head / group * kv.Head;             // element index of key 0 of this head
                    Scores<TR>(query, kv.Data, k, kv.Pos, hd, length, scores);
                    Softmax<TR>(scores, mask.Data, row * mask.Row, mask.Pos, length);
                    Mix<TR>(kv.Data, k + kv.Part, kv.Pos, hd, length, scores, py + ((long)row * heads + head) * hd);
                }
        }
    }

    /// <summary>s[j] = q · k_j / sqrt(hd) for keys k_j at element k + j * pos of <paramref name="kv"/>, eight keys at a time (their eight dot products reduced together).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores<TR>(float* q, void* kv, long k, long pos, int hd, int length, float* s) where TR : struct, IRowReader
    {
        var scale = Vector256.Create(1f / MathF.Sqrt(hd));
        int j = 0;
        for (; j + 8 <= length; j += 8)
        {
            long k0 = k + j * pos;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int c = 0; c < hd; c += 8)
            {
                var qc = Vector256.Load(q + c);
                long kc = k0 + c;
                a0 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc), a0);
                a1 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + pos), a1);
                a2 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + 2 * pos), a2);
                a3 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + 3 * pos), a3);
                a4 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + 4 * pos), a4);
                a5 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + 5 * pos), a5);
                a6 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + 6 * pos), a6);
                a7 = Vector256.FusedMultiplyAdd(qc, TR.Load(kv, kc + 7 * pos), a7);
            }
            var lo = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));   // per 128-bit half: partial sums of keys 0-3
            var hi = Avx.HorizontalAdd(Avx.HorizontalAdd(a4, a5), Avx.HorizontalAdd(a6, a7));   // keys 4-7
            ((Avx.Permute2x128(lo, hi, 0x20) + Avx.Permute2x128(lo, hi, 0x31)) * scale).Store(s + j);
        }
        for (; j < length; j++)
        {
            var a = Vector256<float>.Zero;
            for (int c = 0; c < hd; c += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), TR.Load(kv, k + j * pos + c), a);
            s[j] = Vector256.Sum(a) * scale.ToScalar();
        }
    }

    /// <summary>s = softmax(s + mask) in place, over <paramref name="length"/> scores; mask entries (at element m + j * maskPos) are 0 or -inf.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Softmax<TR>(float* s, void* mask, long m, long maskPos, int length) where TR : struct, IRowReader
    {
        float max = float.NegativeInfinity, sum = 0;
        for (int j = 0; j < length; j++)
        {
            if (mask is not null) s[j] += TR.Read(mask, m + j * maskPos);
            max = MathF.Max(max, s[j]);
        }
        int i = 0;
        var top = Vector256.Create(max);
        var total = Vector256<float>.Zero;
        for (; i + 8 <= length; i += 8)
        {
            var e = Vector256.Exp(Vector256.Load(s + i) - top);
            e.Store(s + i);
            total += e;
        }
        for (; i < length; i++) sum += s[i] = MathF.Exp(s[i] - max);
        sum += Vector256.Sum(total);
        for (i = 0; i < length; i++) s[i] /= sum;
    }

    /// <summary>y = Σ_j p_j v_j for values v_j at element v + j * pos of <paramref name="kv"/>: 64 columns (eight registers, one pass over each row) at a time, then 8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Mix<TR>(void* kv, long v, long pos, int hd, int length, float* p, float* y) where TR : struct, IRowReader
    {
        int c = 0;
        for (; c + 64 <= hd; c += 64)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int j = 0; j < length; j++)
            {
                long vj = v + j * pos + c;
                var pj = Vector256.Create(p[j]);
                a0 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj), a0);
                a1 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 24), a3);
                a4 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 32), a4);
                a5 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 40), a5);
                a6 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 48), a6);
                a7 = Vector256.FusedMultiplyAdd(pj, TR.Load(kv, vj + 56), a7);
            }
            a0.Store(y + c); a1.Store(y + c + 8); a2.Store(y + c + 16); a3.Store(y + c + 24);
            a4.Store(y + c + 32); a5.Store(y + c + 40); a6.Store(y + c + 48); a7.Store(y + c + 56);
        }
        for (; c < hd; c += 8)
        {
            Vector256<float> even = default, odd = default;
            int j = 0;
            for (; j + 2 <= length; j += 2)
            {
                even = Vector256.FusedMultiplyAdd(Vector256.Create(p[j]), TR.Load(kv, v + j * pos + c), even);
                odd = Vector256.FusedMultiplyAdd(Vector256.Create(p[j + 1]), TR.Load(kv, v + (j + 1) * pos + c), odd);
            }
            if (j < length) even = Vector256.FusedMultiplyAdd(Vector256.Create(p[j]), TR.Load(kv, v + j * pos + c), even);
            (even + odd).Store(y + c);
        }
    }
}
