using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PpoSharp.Models;

/// <summary>
/// One pre-norm block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)). q, k and v come from one fused projection
/// (H + 2 KV heads of hd), so a step runs one matrix product for all three; a key/value head serves H / KV query heads.
/// </summary>
internal sealed partial class DecoderBlock : Module
{
    private readonly Norm attn_norm, mlp_norm;
    private readonly Norm? q_norm, k_norm;
    private readonly Linear qkv, @out, up, down;
    private readonly Linear? gate;
    private readonly int _layer, _heads, _kvHeads, _headDim;
    private readonly MlpKind _mlp;

    public DecoderBlock(DecoderSpec s, int layer) : base($"block{layer}")
    {
        (_layer, _heads, _kvHeads, _headDim, _mlp) = (layer, s.NHead, s.KvHeadCount, s.HeadDim, s.Mlp);
        attn_norm = new Norm(s.Norm, s.DModel, s.NormEps);
        qkv = Linear(s.DModel, (_heads + 2 * _kvHeads) * _headDim, hasBias: s.QkvBias);
        if (s.QkNorm) (q_norm, k_norm) = (new Norm(NormKind.RmsNorm, _headDim, s.NormEps), new Norm(NormKind.RmsNorm, _headDim, s.NormEps));
        @out = Linear(_heads * _headDim, s.DModel, hasBias: s.OutBias);
        mlp_norm = new Norm(s.Norm, s.DModel, s.NormEps);
        if (s.Mlp == MlpKind.SwiGlu) gate = Linear(s.DModel, s.MlpWidth, hasBias: s.MlpBias);
        up = Linear(s.DModel, s.MlpWidth, hasBias: s.MlpBias);
        down = Linear(s.MlpWidth, s.DModel, hasBias: s.MlpBias);
        RegisterComponents();
    }

    /// <summary>
    /// The block on x (B, T, C); <paramref name="lora"/> adds an adapter's deltas to the projections it targets;
    /// <paramref name="matmul"/> is the dtype of the projections' products (<see cref="Decoder.MatmulDtype"/>).
    /// </summary>
    public Tensor Forward(Tensor x, Tensor? mask, bool causal, KvCache? cache, (Tensor Cos, Tensor Sin)? rope, LoraAdapter? lora, ScalarType? matmul = null)
    {
        if (matmul is null && cache is not null && rope is { } table && Fuses(x, mask, cache, table, lora))
            return Step(x, mask, cache, table, lora);                                        // a decode step in one pass
        if (matmul is not { } t)
        {
            x = x + Attention(attn_norm.forward(x), mask, causal, cache, rope, lora, null);   // (B, T, C)
            return x + Mlp(mlp_norm.forward(x), lora, null);                                 // (B, T, C)
        }
        x = x + Attention(attn_norm.forward(x), mask, causal, cache, rope, lora, t).to(x.dtype);   // (B, T, C); the residual stream in x's dtype
        return x + Mlp(mlp_norm.forward(x).to(t), lora, t).to(x.dtype);                     // one cast for gate and up; SwiGLU's product in t
    }

    /// <summary>A projection's output, plus the adapter's share where it targets this one; in the matmul dtype when one is set (with an adapter, in x's).</summary>
    private Tensor Project(Linear linear, string name, Tensor x, LoraAdapter? lora, ScalarType? matmul)
    {
        var y = matmul is { } t && t != linear.weight!.dtype
            ? functional.linear(x.to(t), linear.weight!.to(t), linear.bias?.to(t))          // (..., out) in t, from a cast of the fp32 weights
            : SmallMatmul.Applies(x, linear.weight!) ? SmallMatmul.Forward(x, linear.weight!, linear.bias)   // a decode step's few rows
            : linear.forward(x);
        return lora is null ? y : lora.Add(_layer, name, x, y);
    }

    private Tensor Mlp(Tensor x, LoraAdapter? lora, ScalarType? matmul)
    {
        var hidden = _mlp switch
        {
            MlpKind.SwiGlu => functional.silu(Project(gate!, "gate", x, lora, matmul)) * Project(up, "up", x, lora, matmul),
            MlpKind.GeluTanh => functional.gelu(Project(up, "up", x, lora, matmul), TorchSharp.Modules.GELU.Approximate.tanh),
            _ => functional.gelu(Project(up, "up", x, lora, matmul)),
        };
        return Project(down, "down", hidden, lora, matmul);
    }

    private Tensor Attention(Tensor x, Tensor? mask, bool causal, KvCache? cache, (Tensor Cos, Tensor Sin)? rope, LoraAdapter? lora, ScalarType? matmul)
    {
        long b = x.shape[0], t = x.shape[1];
        var projected = Project(qkv, "qkv", x, lora, matmul);
        var heads = (matmul is null ? projected : projected.to(x.dtype)).view(b, t, _heads + 2 * _kvHeads, _headDim);   // (B, T, H+2KV, hd) in x's dtype
        bool fewRows = q_norm is null && RowKernels.Applies(heads, rope?.Cos ?? heads);     // a decode step's own buffer: rotated in place, cached from
        if (fewRows && rope is { } table)
        {
            RowKernels.Rotate(heads, _heads + _kvHeads, table);                             // the q and k heads
            rope = null;
        }
        var q = heads.narrow(2, 0, _heads);                                                 // (B, T, H, hd)
        var k = heads.narrow(2, _heads, _kvHeads);                                          // (B, T, KV, hd)
        var v = heads.narrow(2, _heads + _kvHeads, _kvHeads);                               // (B, T, KV, hd)
        if (q_norm is not null) (q, k) = (q_norm.forward(q), k_norm!.forward(k));
        if (rope is { } r) (q, k) = (Rope.Apply(q, r), Rope.Apply(k, r));
        q = q.transpose(1, 2);                                                              // (B, H, T, hd)
        Tensor y;
        if (cache is not null)
        {
            var kv = fewRows ? cache.AppendRows(_layer, heads, _heads) : cache.Append(_layer, k.transpose(1, 2), v.transpose(1, 2));   // (2, B, KV, L, hd)
            y = DecodeAttention.Applies(q, kv, mask) ? DecodeAttention.Forward(q, kv, mask)
                : functional.scaled_dot_product_attention(q, Repeat(kv[0]), Repeat(kv[1]), attn_mask: mask, is_casual: causal);
        }
        else y = functional.scaled_dot_product_attention(q, Repeat(k.transpose(1, 2)), Repeat(v.transpose(1, 2)), attn_mask: mask, is_casual: causal);
        return Project(@out, "out", y.transpose(1, 2).reshape(b, t, _heads * _headDim), lora, matmul);   // (B, T, C)
    }

    /// <summary>Keys or values (B, KV, L, hd) repeated to (B, H, L, hd): query head j reads key/value head j / (H / KV).</summary>
    private Tensor Repeat(Tensor kv)
    {
        if (_kvHeads == _heads) return kv;
        long b = kv.shape[0], l = kv.shape[2];
        return kv.unsqueeze(2).expand(b, _kvHeads, _heads / _kvHeads, l, _headDim).reshape(b, _heads, l, _headDim);
    }
}
