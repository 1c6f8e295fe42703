using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// A decode step of a Llama-style block (RMSNorm, rotary embeddings, SwiGLU) in one pass over raw memory: the kernels
/// and roundings of <see cref="Forward"/>'s path for few rows, without its 20-odd libtorch calls per block (views, adds,
/// activations, and the tensors each returns). At SmolLM2's shape, batch 1, those calls took 2.5 ms of a 19.6 ms fp32
/// step (the matrix products alone 17.1 ms) and of a 10.9 ms bf16 one. The step's rows live in one buffer per thread,
/// in the activations' dtype, as they would in tensors.
/// </summary>
internal sealed unsafe partial class DecoderBlock
{
    [ThreadStatic] private static byte[]? t_step;
    [ThreadStatic] private static long t_steps;

    /// <summary>How many fused block steps this thread has run (a diagnostic: tests check that the fused path was taken).</summary>
    internal static long StepsOnThisThread => t_steps;

    /// <summary>
    /// Whether <see cref="Step"/> applies to x (B, 1, C): the block is Llama-style without q/k norms; a decode step on one
    /// torch thread without autograd, on the CPU, every weight in x's dtype (fp32 or bf16) and contiguous, at most
    /// <see cref="SmallMatmul.MaxRows"/> rows; the mask and tables in x's dtype too.
    /// </summary>
    private bool Steps(Tensor x, Tensor? mask, KvCache cache, (Tensor Cos, Tensor Sin) rope) =>
        gate is not null && q_norm is null && attn_norm.Rms is { } norm && mlp_norm.Rms is not null && x.size(1) == 1 && _headDim % 8 == 0
        && get_num_threads() == 1 && RowKernels.Applies(x, norm.Weight) && RowKernels.Applies(x, rope.Cos) && RowKernels.Applies(x, rope.Sin)
        && SmallMatmul.Applies(x, qkv.weight!) && Small(@out, x) && Small(gate, x) && Small(up, x) && Small(down, x)
        && cache.Dtype == x.dtype && (mask is null || mask.dtype == x.dtype);

    /// <summary>Whether a projection's weight (and bias) suit <see cref="SmallMatmul.Product"/> for rows in x's dtype.</summary>
    private static bool Small(Linear linear, Tensor x) =>
        linear.weight!.dtype == x.dtype && linear.weight.is_contiguous() && linear.weight.size(1) % 8 == 0 && (linear.bias is null || linear.bias.dtype == x.dtype);

    /// <summary>The block on a decode step's rows x (B, 1, C): y (B, 1, C), the new keys and values stored in the cache.</summary>
    private Tensor Step(Tensor x, Tensor? mask, KvCache cache, (Tensor Cos, Tensor Sin) rope)
    {
        t_steps++;
        bool bf16 = x.dtype == ScalarType.BFloat16;
        int m = (int)x.size(0), c = (int)x.size(2), hd = _headDim, nh = _heads + 2 * _kvHeads, width = (int)up.weight!.size(0);
        long size = bf16 ? 2 : 4, elements = (long)m * (2 * c + nh * hd + _heads * hd + 2 * width);
        var y = empty_like(x);                                                                 // (B, 1, C)
        var keys = mask is null ? default : new DecodeAttention.MaskView(RowKernels.Address(mask), mask.stride(0), mask.stride(3));
        byte[] buffer = t_step is { } b && b.LongLength >= elements * size ? b : t_step = new byte[elements * size];
        fixed (byte* start = buffer)
        {
            byte* h = start, heads = h + m * c * size, att = heads + m * nh * hd * size, o = att + m * _heads * hd * size;
            byte* g = o + m * c * size, u = g + m * width * size;                             // (B, C), (B, NH, hd), (B, H hd), (B, C), (B, F) x2
            byte* px = RowKernels.Address(x), py = RowKernels.Address(y);
            RowKernels.RmsNorm(px, RowKernels.Address(attn_norm.Rms!.Value.Weight), h, m, c, attn_norm.Rms.Value.Eps, bf16);
            SmallMatmul.Product(h, m, qkv.weight!, qkv.bias, heads, bf16);
            RowKernels.Rotate(heads, m, nh, hd, _heads + _kvHeads, RowKernels.Address(rope.Cos), RowKernels.Address(rope.Sin), bf16);
            var kv = cache.AppendRows(_layer, heads, m, 1, _heads);
            DecodeAttention.Forward(heads, (long)nh * hd, hd, m, _heads, hd, kv, keys, att, bf16);
            SmallMatmul.Product(att, m, @out.weight!, @out.bias, o, bf16);
            RowKernels.Add(px, o, py, (long)m * c, bf16);                                      // y = x + attn
            RowKernels.RmsNorm(py, RowKernels.Address(mlp_norm.Rms!.Value.Weight), h, m, c, mlp_norm.Rms.Value.Eps, bf16);
            SmallMatmul.Product(h, m, gate!.weight!, gate.bias, g, bf16);
            SmallMatmul.Product(h, m, up.weight!, up.bias, u, bf16);
            RowKernels.SiluTimes(g, u, (long)m * width, bf16);                                 // g = silu(g) u
            SmallMatmul.Product(g, m, down.weight!, down.bias, o, bf16);
            RowKernels.Add(py, o, py, (long)m * c, bf16);                                      // y += mlp
        }
        return y;
    }
}
