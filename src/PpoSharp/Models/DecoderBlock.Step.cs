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

    [ThreadStatic] private static bool t_unfused;

    /// <summary>How many fused block steps this thread has run (a diagnostic: tests check that the fused path was taken).</summary>
    internal static long StepsOnThisThread => t_steps;

    /// <summary>Runs this thread's decode steps block by block through the same kernels instead (tests compare the two).</summary>
    internal static bool Unfused { get => t_unfused; set => t_unfused = value; }

    /// <summary>
    /// Whether <see cref="Step"/> takes x (B, 1, C): a Llama-style block without q/k norms, and a LoRA adapter, if any,
    /// that <see cref="LoraAdapter.AddsRows"/> serves; a decode step on one torch thread without autograd, on the CPU
    /// with AVX2 and FMA, at most <see cref="SmallMatmul.MaxRows"/> rows; every weight and bias, the tables, the mask
    /// (B, 1, 1, L) over the cache and the new position, and the cache in x's dtype (fp32 or bf16), the cache of x's
    /// batch; the weights contiguous with widths a multiple of 8.
    /// </summary>
    private bool Fuses(Tensor x, Tensor? mask, KvCache cache, (Tensor Cos, Tensor Sin) rope, LoraAdapter? lora) =>
        !t_unfused && (lora is null || lora.AddsRows(x.dtype)) && gate is not null && q_norm is null && attn_norm.Rms is { } first
        && mlp_norm.Rms is { } second && x.size(1) == 1 && _headDim % 8 == 0
        && get_num_threads() == 1 && RowKernels.Applies(x, first.Weight) && RowKernels.Applies(x, second.Weight)
        && RowKernels.Applies(x, rope.Cos) && RowKernels.Applies(x, rope.Sin) && SmallMatmul.Applies(x, qkv.weight!)
        && new[] { qkv, @out, gate, up, down }.All(l => SmallMatmul.Suits(l.weight!, l.bias, x.dtype))
        && cache.Holds(x) && (mask is null || mask.dtype == x.dtype && mask.size(-1) == cache.Length + 1);

    /// <summary>The block on a decode step's rows x (B, 1, C), a LoRA adapter's shares added to the projections it targets: y (B, 1, C), the new keys and values stored in the cache.</summary>
    private Tensor Step(Tensor x, Tensor? mask, KvCache cache, (Tensor Cos, Tensor Sin) rope, LoraAdapter? lora)
    {
        t_steps++;
        bool bf16 = x.dtype == ScalarType.BFloat16;
        int m = (int)x.size(0), c = (int)x.size(2), hd = _headDim, nh = _heads + 2 * _kvHeads, width = (int)up.weight!.size(0);
        long adapters = lora is null ? 0 : lora.Settings.R + Math.Max(Math.Max(nh * hd, width), c);         // LoRA's scratch: r + the widest output
        long size = bf16 ? 2 : 4, elements = (long)m * (2 * c + nh * hd + _heads * hd + 2 * width + adapters);
        var y = empty_like(x);                                                                 // (B, 1, C)
        byte[] buffer = t_step is { } b && b.LongLength >= elements * size ? b : t_step = new byte[elements * size];
        fixed (byte* start = buffer)
        {
            byte* h = start, heads = h + m * c * size, att = heads + m * nh * hd * size, o = att + m * _heads * hd * size;
            byte* g = o + m * c * size, u = g + m * width * size, scratch = u + m * width * size;   // (B, C), (B, NH, hd), (B, H hd), (B, C), (B, F) x2
            void Adapt(string module, byte* input, byte* output, int cols) => lora?.AddRows(_layer, module, input, m, output, cols, bf16, scratch);
            byte* px = RowKernels.Address(x), py = RowKernels.Address(y);
            RowKernels.RmsNorm(px, RowKernels.Address(attn_norm.Rms!.Value.Weight), h, m, c, attn_norm.Rms.Value.Eps, bf16);
            SmallMatmul.Product(h, m, qkv.weight!, qkv.bias, heads, bf16);
            Adapt("qkv", h, heads, nh * hd);
            RowKernels.Rotate(heads, m, nh, hd, _heads + _kvHeads, RowKernels.Address(rope.Cos), RowKernels.Address(rope.Sin), bf16);
            var kv = cache.AppendRows(_layer, heads, m, 1, _heads);
            DecodeAttention.Forward(heads, (long)nh * hd, hd, m, _heads, hd, kv, DecodeAttention.MaskView.Of(mask), att, bf16);
            SmallMatmul.Product(att, m, @out.weight!, @out.bias, o, bf16);
            Adapt("out", att, o, c);
            RowKernels.Add(px, o, py, (long)m * c, bf16);                                      // y = x + attn
            RowKernels.RmsNorm(py, RowKernels.Address(mlp_norm.Rms!.Value.Weight), h, m, c, mlp_norm.Rms.Value.Eps, bf16);
            SmallMatmul.Product(h, m, gate!.weight!, gate.bias, g, bf16);
            Adapt("gate", h, g, width);
            SmallMatmul.Product(h, m, up.weight!, up.bias, u, bf16);
            Adapt("up", h, u, width);
            RowKernels.SiluTimes(g, u, (long)m * width, bf16);                                 // g = silu(g) u
            SmallMatmul.Product(g, m, down.weight!, down.bias, o, bf16);
            Adapt("down", g, o, c);
            RowKernels.Add(py, o, py, (long)m * c, bf16);                                      // y += mlp
        }
        return y;
    }
}
