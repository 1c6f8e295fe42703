using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PpoSharp.Models;

/// <summary>
/// A GPT-style causal decoder after nanoGPT: token + position embeddings, pre-LayerNorm blocks of causal
/// self-attention (scaled_dot_product_attention) and an MLP, a final LayerNorm and an LM head.
/// <see cref="Hidden"/> exposes the last layer's states so that heads (critic, reward) can be attached to it.
/// </summary>
public sealed class Gpt : Module<Tensor, Tensor>
{
    private readonly Embedding wte, wpe;
    private readonly ModuleList<Block> blocks;
    private readonly LayerNorm ln_f;
    private readonly Linear lm_head;

    public GptConfig Config { get; }

    public Gpt(GptConfig config) : base("gpt")
    {
        Config = config.Validate();
        wte = Embedding(config.VocabSize, config.DModel);
        wpe = Embedding(config.ContextLength, config.DModel);
        blocks = new ModuleList<Block>(Enumerable.Range(0, config.NLayer).Select(i => new Block(config, i)).ToArray());
        ln_f = LayerNorm(config.DModel);
        lm_head = Linear(config.DModel, config.VocabSize, hasBias: false);
        RegisterComponents();
        InitWeights();
    }

    /// <summary>
    /// Final hidden states (B, T, C) for ids (B, T). <paramref name="positions"/> (B, T) default to past..past+T-1;
    /// <paramref name="keyMask"/> (B, past+T) marks real (non-pad) tokens, cached ones included; with neither a mask
    /// nor a cache the attention is plain causal.
    /// </summary>
    public Tensor Hidden(Tensor ids, Tensor? positions = null, Tensor? keyMask = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        long b = ids.shape[0], t = ids.shape[1];
        int past = cache?.Length ?? 0;
        if (past + t > Config.ContextLength && positions is null)
            throw new ArgumentException($"sequence of {past + t} tokens exceeds context_length {Config.ContextLength}");
        positions ??= arange(past, past + t, dtype: int64, device: ids.device).unsqueeze(0).expand(b, t);   // (B, T)
        var mask = AttentionMask(b, t, past, keyMask, wte.weight!.dtype, ids.device);                 // (B, 1, T, L) or none
        var x = wte.forward(ids) + wpe.forward(positions);                                              // (B, T, C)
        for (int i = 0; i < blocks.Count; i++) x = blocks[i].Forward(x, mask, causal: mask is null && t > 1, cache);
        cache?.Advance((int)t);
        return ln_f.forward(x).MoveToOuterDisposeScope();                                             // (B, T, C)
    }

    /// <summary>LM head: hidden (..., C) to logits (..., V).</summary>
    public Tensor Logits(Tensor hidden) => lm_head.forward(hidden);

    /// <summary>Logits (B, T, V) of a right-padded or unpadded batch (B, T) with plain causal attention.</summary>
    public override Tensor forward(Tensor ids) => Logits(Hidden(ids));

    /// <summary>
    /// Additive attention mask (B, 1, T, L), 0 where a query may attend and -inf elsewhere: causal over absolute
    /// indices, real keys only, and always itself, so that a pad query never has an empty row (which would give NaN and
    /// poison the cache). Built once per forward and shared by every layer. Null where no mask is needed: plain causal
    /// attention from position 0 (the caller passes is_causal), or a single new query over an unpadded cache.
    /// </summary>
    private static Tensor? AttentionMask(long b, long t, int past, Tensor? keyMask, ScalarType dtype, Device device)
    {
        if (keyMask is null && (past == 0 || t == 1)) return null;
        long l = past + t;
        Tensor allowed;                                                          // (B or 1, T, L) bool
        if (t == 1) allowed = keyMask!.to(ScalarType.Bool).index_fill(1, tensor(l - 1, device: device), true).view(b, 1, l);  // decode: all earlier keys are causal
        else
        {
            var q = arange(past, l, dtype: int64, device: device).view(t, 1);  // (T, 1)
            var k = arange(0, l, dtype: int64, device: device).view(1, l);     // (1, L)
            allowed = k.le(q).unsqueeze(0);                                    // (1, T, L)
            if (keyMask is not null) allowed = allowed.logical_and(keyMask.to(ScalarType.Bool).view(b, 1, l)).logical_or(k.eq(q).unsqueeze(0));
        }
        return zeros(1, dtype: dtype, device: device).masked_fill(allowed.logical_not(), double.NegativeInfinity)
            .expand(b, t, l).unsqueeze(1);                                       // (B, 1, T, L)
    }

    /// <summary>nanoGPT's init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 n_layer).</summary>
    private void InitWeights()
    {
        using var _ = no_grad();
        double residualStd = 0.02 / Math.Sqrt(2.0 * Config.NLayer);
        foreach (var (name, module) in named_modules())
        {
            if (module is Linear linear)
            {
                bool residual = name.EndsWith("c_proj", StringComparison.Ordinal) || name.EndsWith("mlp_proj", StringComparison.Ordinal);
                init.normal_(linear.weight!, 0, residual ? residualStd : 0.02);
                if (linear.bias is not null) init.zeros_(linear.bias);
            }
            else if (module is Embedding embedding) init.normal_(embedding.weight!, 0, 0.02);
        }
    }

    /// <summary>One pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).</summary>
    private sealed class Block : Module
    {
        private readonly LayerNorm ln_1, ln_2;
        private readonly Linear c_attn, c_proj, c_fc, mlp_proj;
        private readonly int _layer, _heads;

        public Block(GptConfig c, int layer) : base($"block{layer}")
        {
            _layer = layer;
            _heads = c.NHead;
            ln_1 = LayerNorm(c.DModel);
            c_attn = Linear(c.DModel, 3 * c.DModel);
            c_proj = Linear(c.DModel, c.DModel);
            ln_2 = LayerNorm(c.DModel);
            c_fc = Linear(c.DModel, 4 * c.DModel);
            mlp_proj = Linear(4 * c.DModel, c.DModel);
            RegisterComponents();
        }

        public Tensor Forward(Tensor x, Tensor? mask, bool causal, KvCache? cache)
        {
            x = x + Attention(ln_1.forward(x), mask, causal, cache);                       // (B, T, C)
            return x + mlp_proj.forward(functional.gelu(c_fc.forward(ln_2.forward(x))));    // (B, T, C)
        }

        private Tensor Attention(Tensor x, Tensor? mask, bool causal, KvCache? cache)
        {
            long b = x.shape[0], t = x.shape[1], c = x.shape[2], hd = c / _heads;
            var qkv = c_attn.forward(x).view(b, t, 3, _heads, hd).permute(2, 0, 3, 1, 4);  // (3, B, H, T, hd)
            var q = qkv[0];                                                                 // (B, H, T, hd)
            var kv = cache?.Append(_layer, qkv.narrow(0, 1, 2)) ?? qkv.narrow(0, 1, 2);      // (2, B, H, L, hd)
            var y = cache is not null && DecodeAttention.Applies(q, kv, mask) ? DecodeAttention.Forward(q, kv, mask)
                : functional.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask: mask, is_casual: causal);  // (B, H, T, hd)
            return c_proj.forward(y.transpose(1, 2).reshape(b, t, c));                       // (B, T, C)
        }
    }
}
