using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace PpoSharp.Models;

/// <summary>
/// One causal decoder configured by a <see cref="DecoderSpec"/>: token embeddings (plus a learned position table or
/// rotary positions), pre-norm blocks of causal self-attention (grouped-query when there are fewer key/value heads) and
/// an MLP, a final norm and an LM head (or the embedding table itself when tied). The built-in GPT and every supported
/// Hugging Face architecture are configurations of it; <see cref="Hidden"/> exposes the last layer's states for heads.
/// <see cref="WithAdapter"/> makes a view of a frozen base with a LoRA adapter: it shares every weight of the base and
/// owns (and registers, saves and trains) only the adapter, so actor, critic and reward model can share one backbone.
/// </summary>
public sealed class Decoder : Module<Tensor, Tensor>
{
    private readonly Embedding embed;
    private readonly Embedding? pos_embed;
    private readonly ModuleList<DecoderBlock> layers;
    private readonly Norm norm;
    private readonly Linear? lm_head;
    private readonly float[]? _invFreq;                    // (hd/2) rotary frequencies: fp32 whatever the weights' dtype, not saved
    private readonly LoraAdapter? lora;                    // a view's adapter (its only registered module)
    private readonly BaseModel? _base;                     // a view's base, held outside the module tree: not saved or trained here

    private sealed record BaseModel(Decoder Model);

    public DecoderSpec Config { get; }

    /// <summary>How the model is stored on disk: its Hugging Face architecture, base config and dtype (GPT-2's layout for built-in models).</summary>
    public Hf.HfModelInfo Format { get; internal set; }

    public Decoder(DecoderSpec spec, Hf.HfModelInfo? format = null) : base("decoder")
    {
        Config = spec.Validate();
        Format = format ?? Hf.HfModelInfo.BuiltIn();
        embed = Embedding(spec.VocabSize, spec.DModel);
        if (spec.Positions == PositionKind.Learned) pos_embed = Embedding(spec.ContextLength, spec.DModel);
        layers = new ModuleList<DecoderBlock>(Enumerable.Range(0, spec.NLayer).Select(i => new DecoderBlock(spec, i)).ToArray());
        norm = new Norm(spec.Norm, spec.DModel, spec.NormEps);
        if (!spec.TiedHead) lm_head = Linear(spec.DModel, spec.VocabSize, hasBias: false);
        RegisterComponents();
        if (spec.Positions == PositionKind.Rope) _invFreq = Rope.InverseFrequencies(spec);
        InitWeights();
    }

    private Decoder(Decoder baseModel, LoraAdapter adapter) : base("decoder")
    {
        (Config, Format, _base, lora) = (baseModel.Config, baseModel.Format, new BaseModel(baseModel), adapter);
        (embed, layers, norm) = (null!, null!, null!);                    // the base's are used
        RegisterComponents();
    }

    /// <summary>
    /// A view of this model (which must not itself be a view) with <paramref name="adapter"/>: the same weights plus the
    /// adapter's deltas. This model is the view with adapters disabled: the reference of a LoRA run.
    /// </summary>
    public Decoder WithAdapter(LoraAdapter adapter) =>
        _base is null ? new Decoder(this, adapter) : throw new InvalidOperationException("a LoRA view cannot take a second adapter");

    /// <summary>The adapter of a LoRA view; null for a full model.</summary>
    public LoraAdapter? Adapter => lora;

    /// <summary>The frozen model a LoRA view adapts; null for a full model.</summary>
    public Decoder? Base => _base?.Model;

    /// <summary>The embedding table (V, C); with a tied head also the LM head's weight.</summary>
    public Parameter Embeddings => _base?.Model.Embeddings ?? embed.weight!;

    /// <summary>
    /// Final hidden states (B, T, C) for ids (B, T). <paramref name="positions"/> (B, T) default to past..past+T-1;
    /// <paramref name="keyMask"/> (B, past+T) marks real (non-pad) tokens, cached ones included; with neither a mask
    /// nor a cache the attention is plain causal.
    /// </summary>
    public Tensor Hidden(Tensor ids, Tensor? positions = null, Tensor? keyMask = null, KvCache? cache = null) =>
        _base is null ? HiddenWith(ids, positions, keyMask, cache, null, GradientCheckpointing, MatmulDtype)
            : _base.Model.HiddenWith(ids, positions, keyMask, cache, lora, GradientCheckpointing, MatmulDtype);

    private Tensor HiddenWith(Tensor ids, Tensor? positions, Tensor? keyMask, KvCache? cache, LoraAdapter? adapter, bool checkpointing, ScalarType? matmul)
    {
        using var scope = NewDisposeScope();
        long b = ids.shape[0], t = ids.shape[1];
        int past = cache?.Length ?? 0;
        if (past + t > Config.ContextLength && positions is null)
            throw new ArgumentException($"sequence of {past + t} tokens exceeds context_length {Config.ContextLength}");
        positions ??= arange(past, past + t, dtype: int64, device: ids.device).unsqueeze(0).expand(b, t);   // (B, T)
        var mask = AttentionMask(b, t, past, keyMask, embed.weight!.dtype, ids.device);               // (B, 1, T, L) or none
        var x = embed.forward(ids);                                                                     // (B, T, C)
        if (pos_embed is not null) x = x + pos_embed.forward(positions);
        (Tensor, Tensor)? rope = _invFreq is null ? null : Rope.Tables(positions, tensor(_invFreq, device: ids.device), x.dtype);                // (B, T, 1, hd) x2
        bool causal = mask is null && t > 1;
        for (int i = 0; i < layers.Count; i++)
        {
            using var layer = NewDisposeScope();         // a block's temporaries go when it ends, not when the whole pass does (autograd keeps what it saved)
            x = (checkpointing && cache is null ? Checkpointed(i, x, mask, causal, rope, adapter, matmul) : layers[i].Forward(x, mask, causal, cache, rope, adapter, matmul))
                .MoveToOuterDisposeScope();              // (B, T, C)
        }
        cache?.Advance((int)t);
        return norm.forward(x).MoveToOuterDisposeScope();                                            // (B, T, C)
    }

    /// <summary>
    /// TRL's gradient_checkpointing (transformers' gradient_checkpointing_enable): while gradients are on, each block keeps
    /// only its input and recomputes its activations in the backward pass (<see cref="Checkpoint"/>). Set on the model
    /// that is called (a LoRA view or a full model).
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>
    /// TRL's bf16 for fp32 weights: the dtype of the blocks' and the LM head's matrix products (with a cast copy of the
    /// weights; the gradients flow back to the fp32 weights) and of the MLP's activations between its products. The
    /// residual stream, norms, attention with its rotary positions and KV cache, log-softmax and LoRA's adapters stay in
    /// the weights' dtype (attention in bf16 was slower: libtorch's bf16 kernel took a demo model's SFT from 31 to 20
    /// thousand tokens/s). Null: everything in the weights' dtype. Set on the model that is called.
    /// </summary>
    public ScalarType? MatmulDtype { get; set; }

    /// <summary>Block <paramref name="i"/> under <see cref="Checkpoint"/>: every tensor it reads is an input, its trainable weights included.</summary>
    private Tensor Checkpointed(int i, Tensor x, Tensor? mask, bool causal, (Tensor Cos, Tensor Sin)? rope, LoraAdapter? adapter, ScalarType? matmul)
    {
        var block = layers[i];
        var weights = block.parameters().Concat(adapter?.LayerParameters(i) ?? []).Where(p => p.requires_grad);
        return Checkpoint.Run(a => [block.Forward(a[0]!, a[1], causal, null, a[2] is null ? null : (a[2]!, a[3]!), adapter, matmul)],
            [x, mask, rope?.Cos, rope?.Sin, .. weights])[0];                                      // (B, T, C)
    }

    /// <summary>LM head: hidden (..., C) to logits (..., V).</summary>
    public Tensor Logits(Tensor hidden) =>
        SmallMatmul.Applies(hidden, HeadWeight) ? SmallMatmul.Forward(hidden, HeadWeight, null) : functional.linear(hidden, HeadWeight);

    /// <summary>The LM head's weight (V, C): its own, or the embedding table when tied.</summary>
    public Parameter HeadWeight => _base?.Model.HeadWeight ?? lm_head?.weight ?? embed.weight!;

    /// <summary>
    /// log pi(a | s) (...) of <paramref name="actions"/> (...) after the final hidden states (..., C), at temperature τ, and
    /// the entropy of pi with <paramref name="entropy"/>: <see cref="Algorithms.LogProbs.FromHidden"/>, which never holds
    /// the logits of every position at once.
    /// </summary>
    public (Tensor LogProbs, Tensor? Entropy) TokenLogProbs(Tensor hidden, Tensor actions, double temperature = 1, bool entropy = false)
    {
        Tensor head = HeadWeight;                                                              // (V, C)
        if (MatmulDtype is { } t && t != hidden.dtype) (hidden, head) = (hidden.to(t), head.to(t));
        return Algorithms.LogProbs.FromHidden(hidden, head, actions, temperature, entropy);
    }

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

    /// <summary>nanoGPT's init for new models: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 n_layer).</summary>
    private void InitWeights()
    {
        using var _ = no_grad();
        double residualStd = 0.02 / Math.Sqrt(2.0 * Config.NLayer);
        foreach (var (name, module) in named_modules())
        {
            if (module is Linear linear)
            {
                bool residual = name.EndsWith(".out", StringComparison.Ordinal) || name.EndsWith(".down", StringComparison.Ordinal);
                init.normal_(linear.weight!, 0, residual ? residualStd : 0.02);
                if (linear.bias is not null) init.zeros_(linear.bias);
            }
            else if (module is Embedding embedding) init.normal_(embedding.weight!, 0, 0.02);
        }
    }
}

/// <summary>LayerNorm (weight, bias) or RMSNorm (weight; computed in fp32 and cast back, as Hugging Face's Llama does) over the last dimension.</summary>
internal sealed class Norm : Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter? bias;
    private readonly NormKind _kind;
    private readonly double _eps;

    public Norm(NormKind kind, long size, double eps) : base("norm")
    {
        (_kind, _eps) = (kind, eps);
        weight = Parameter(ones(size));
        if (kind == NormKind.LayerNorm) bias = Parameter(zeros(size));
        RegisterComponents();
    }

    /// <summary>An RMSNorm's weight and epsilon, for kernels that apply it to raw rows; null for a LayerNorm.</summary>
    public (Tensor Weight, double Eps)? Rms => _kind == NormKind.RmsNorm ? (weight, _eps) : null;

    public override Tensor forward(Tensor x)
    {
        if (_kind == NormKind.LayerNorm) return functional.layer_norm(x, [x.shape[^1]], weight, bias, _eps);
        if (RowKernels.Applies(x, weight)) return RowKernels.RmsNorm(x, weight, _eps);              // a decode step's few rows
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        var normed = x32 * (x32.pow(2).mean([-1], keepdim: true) + _eps).rsqrt();     // (..., C)
        return (weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>Rotary position embeddings in Hugging Face's layout: q' = q cos + rotate_half(q) sin, rotate_half(x) = (-x₂, x₁).</summary>
internal static class Rope
{
    /// <summary>
    /// inv_freq_j = 1 / θ^(2j / hd), j = 0 .. hd/2-1, in fp32 as transformers computes it; with Llama 3.1 scaling, long
    /// wavelengths are divided by the factor, short ones kept and the band between interpolated smoothly.
    /// </summary>
    public static float[] InverseFrequencies(DecoderSpec spec)
    {
        using var scope = NewDisposeScope();
        return Frequencies(spec).data<float>().ToArray();
    }

    private static Tensor Frequencies(DecoderSpec spec)
    {
        int hd = spec.HeadDim;
        var invFreq = 1.0f / pow(tensor((float)spec.RopeTheta), arange(0, hd, 2, dtype: int64).to(ScalarType.Float32) / hd);   // (hd/2)
        if (spec.RopeScaling is not { } s) return invFreq;
        if (!s.Llama3) return invFreq / s.Factor;
        double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor, highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
        var wavelen = 2 * Math.PI / invFreq;
        var scaled = where(wavelen > lowWavelen, invFreq / s.Factor, invFreq);
        var smooth = (s.OriginalMaxPositions / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        var smoothed = (1 - smooth) * scaled / s.Factor + smooth * scaled;
        var medium = (wavelen < highWavelen).logical_not().logical_and((wavelen > lowWavelen).logical_not());
        return where(medium, smoothed, scaled);
    }

    /// <summary>cos and sin (B, T, 1, hd) of positions (B, T), computed in fp32 and cast to the activations' dtype, broadcast over heads.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, Tensor invFreq, ScalarType dtype)
    {
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;          // (B, T, hd/2)
        var angles = cat([freqs, freqs], -1).unsqueeze(2);                              // (B, T, 1, hd)
        return (angles.cos().to(dtype), angles.sin().to(dtype));
    }

    /// <summary>Rotates x (B, T, heads, hd).</summary>
    public static Tensor Apply(Tensor x, (Tensor Cos, Tensor Sin) t)
    {
        long half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);     // rotate_half(x)
        return x * t.Cos + rotated * t.Sin;
    }
}
