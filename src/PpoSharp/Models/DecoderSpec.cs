namespace PpoSharp.Models;

/// <summary>Normalisation of the blocks and of the final hidden states.</summary>
public enum NormKind
{
    /// <summary>LayerNorm with weight and bias (GPT-2, the built-in model).</summary>
    LayerNorm,
    /// <summary>RMSNorm: x / sqrt(mean(x²) + eps) · weight, computed in fp32 (Llama, Mistral, Qwen).</summary>
    RmsNorm,
}

/// <summary>How positions enter the model.</summary>
public enum PositionKind
{
    /// <summary>A learned table added to the token embeddings (GPT-2).</summary>
    Learned,
    /// <summary>Rotary embeddings on queries and keys, in Hugging Face's rotate_half layout (Llama and its relatives).</summary>
    Rope,
}

/// <summary>The feed-forward block.</summary>
public enum MlpKind
{
    /// <summary>down(gelu(up(x))) with the exact (erf) GELU.</summary>
    Gelu,
    /// <summary>down(gelu(up(x))) with GELU's tanh approximation (GPT-2's <c>gelu_new</c>).</summary>
    GeluTanh,
    /// <summary>down(silu(gate(x)) · up(x)) (Llama's SwiGLU).</summary>
    SwiGlu,
}

/// <summary>
/// RoPE scaling: linear (every frequency divided by <see cref="Factor"/>), or, with <see cref="Llama3"/>, Llama 3.1's
/// frequency-dependent scaling (<c>rope_type: llama3</c>).
/// </summary>
public sealed record RopeScaling(double Factor, bool Llama3 = false, double LowFreqFactor = 0, double HighFreqFactor = 0, int OriginalMaxPositions = 0);

/// <summary>
/// One causal decoder for every supported architecture: the built-in GPT is one configuration, Llama, Mistral, Qwen2/3
/// and GPT-2 checkpoints are others (see <c>Models/Hf</c>). Immutable; <see cref="Validate"/> names the first bad field.
/// Zero for <see cref="KvHeads"/>, <see cref="HeadSize"/> or <see cref="Intermediate"/> means the GPT default (all heads,
/// DModel / NHead, 4 · DModel).
/// </summary>
/// <param name="VocabSize">Rows of the embedding table and of the LM head.</param>
/// <param name="ContextLength">Longest sequence (prompt + response): the learned position table, or RoPE's <c>max_position_embeddings</c>.</param>
/// <param name="NLayer">Decoder blocks.</param>
/// <param name="NHead">Query heads.</param>
/// <param name="DModel">Width of the residual stream.</param>
public sealed record DecoderSpec(int VocabSize, int ContextLength = 64, int NLayer = 4, int NHead = 4, int DModel = 128)
{
    /// <summary>Key/value heads (grouped-query attention when fewer than <see cref="NHead"/>; 1 is multi-query).</summary>
    public int KvHeads { get; init; }
    /// <summary>Width of one head (Qwen3 sets it apart from DModel / NHead).</summary>
    public int HeadSize { get; init; }
    public int Intermediate { get; init; }
    public NormKind Norm { get; init; } = NormKind.LayerNorm;
    public double NormEps { get; init; } = 1e-5;
    public PositionKind Positions { get; init; } = PositionKind.Learned;
    public double RopeTheta { get; init; } = 10000;
    public RopeScaling? RopeScaling { get; init; }
    public MlpKind Mlp { get; init; } = MlpKind.Gelu;
    /// <summary>Biases on the q, k, v projections (GPT-2, Qwen2).</summary>
    public bool QkvBias { get; init; } = true;
    /// <summary>Bias on the attention output and on the MLP's linear layers (GPT-2; Llama's <c>mlp_bias</c>).</summary>
    public bool OutBias { get; init; } = true;
    public bool MlpBias { get; init; } = true;
    /// <summary>RMSNorm of each query and key head before RoPE (Qwen3's q_norm / k_norm).</summary>
    public bool QkNorm { get; init; }
    /// <summary>The LM head is the embedding table itself: one shared parameter, not a copy.</summary>
    public bool TiedHead { get; init; }

    public int KvHeadCount => KvHeads == 0 ? NHead : KvHeads;
    public int HeadDim => HeadSize == 0 ? DModel / NHead : HeadSize;
    public int MlpWidth => Intermediate == 0 ? 4 * DModel : Intermediate;

    /// <summary>Upper bounds far above any released model (Gemma 3: 262,144 tokens; Llama 3.1 405B: d 16,384, 126 layers),
    /// so that a hostile config is refused before anything is sized from it.</summary>
    public const int MaxVocab = 1 << 24, MaxContext = 1 << 24, MaxLayers = 1024, MaxHeads = 1024, MaxWidth = 1 << 17, MaxIntermediate = 1 << 20;

    public DecoderSpec Validate()
    {
        if (VocabSize < 2 || VocabSize > MaxVocab) throw new PpoSharpException($"vocab_size must be in [2, {MaxVocab}] (got {VocabSize})");
        if (ContextLength < 2 || ContextLength > MaxContext) throw new PpoSharpException($"context_length must be in [2, {MaxContext}] (got {ContextLength})");
        if (NLayer < 1 || NLayer > MaxLayers) throw new PpoSharpException($"n_layer must be in [1, {MaxLayers}] (got {NLayer})");
        if (NHead > MaxHeads || KvHeads > MaxHeads) throw new PpoSharpException($"the number of attention heads must be at most {MaxHeads} (got {Math.Max(NHead, KvHeads)})");
        if (DModel > MaxWidth || HeadSize > MaxWidth) throw new PpoSharpException($"the hidden size and head_dim must be at most {MaxWidth} (got {Math.Max(DModel, HeadSize)})");
        if (Intermediate > MaxIntermediate || Intermediate == 0 && DModel > MaxIntermediate / 4)
            throw new PpoSharpException($"intermediate_size must be at most {MaxIntermediate} (got {Intermediate})");
        if (NHead < 1 || DModel < 1 || HeadSize == 0 && DModel % NHead != 0)
            throw new PpoSharpException($"d_model ({DModel}) must be a positive multiple of n_head ({NHead})");
        if (KvHeadCount < 1 || NHead % KvHeadCount != 0)
            throw new PpoSharpException($"the number of key/value heads ({KvHeadCount}) must divide the number of attention heads ({NHead})");
        if (HeadDim < 1 || Positions == PositionKind.Rope && HeadDim % 2 != 0)
            throw new PpoSharpException($"head_dim ({HeadDim}) must be positive, and even with rotary positions");
        if (MlpWidth < 1) throw new PpoSharpException($"intermediate_size must be positive (got {MlpWidth})");
        if (!(NormEps > 0)) throw new PpoSharpException($"the norm epsilon must be > 0 (got {NormEps})");
        if (!(RopeTheta > 0)) throw new PpoSharpException($"rope_theta must be > 0 (got {RopeTheta})");
        return this;
    }

    /// <summary>Rows of q, k and v in the fused qkv projection: heads x head_dim, and kv_heads x head_dim twice.</summary>
    public long[] QkvRows => [(long)NHead * HeadDim, (long)KvHeadCount * HeadDim, (long)KvHeadCount * HeadDim];

    /// <summary>
    /// The shape of every parameter a <see cref="Decoder"/> of this spec holds, by its state-dict name, without
    /// allocating it (so that weights on disk can be checked and the memory they need counted first).
    /// </summary>
    public Dictionary<string, long[]> ParameterShapes()
    {
        long d = DModel, hd = HeadDim, mlp = MlpWidth;
        var shapes = new Dictionary<string, long[]> { ["embed.weight"] = [VocabSize, d] };
        if (Positions == PositionKind.Learned) shapes["pos_embed.weight"] = [ContextLength, d];
        for (int i = 0; i < NLayer; i++)
        {
            var l = $"layers.{i}.";
            AddNorm(shapes, l + "attn_norm", d);
            AddLinear(shapes, l + "qkv", d, QkvRows.Sum(), QkvBias);
            if (QkNorm) { shapes[l + "q_norm.weight"] = [hd]; shapes[l + "k_norm.weight"] = [hd]; }       // always RMSNorm
            AddLinear(shapes, l + "out", NHead * hd, d, OutBias);
            AddNorm(shapes, l + "mlp_norm", d);
            if (Mlp == MlpKind.SwiGlu) AddLinear(shapes, l + "gate", d, mlp, MlpBias);
            AddLinear(shapes, l + "up", d, mlp, MlpBias);
            AddLinear(shapes, l + "down", mlp, d, MlpBias);
        }
        AddNorm(shapes, "norm", d);
        if (!TiedHead) shapes["lm_head.weight"] = [VocabSize, d];
        return shapes;
    }

    private void AddNorm(Dictionary<string, long[]> shapes, string name, long size)
    {
        shapes[name + ".weight"] = [size];
        if (Norm == NormKind.LayerNorm) shapes[name + ".bias"] = [size];
    }

    private static void AddLinear(Dictionary<string, long[]> shapes, string name, long input, long output, bool bias)
    {
        shapes[name + ".weight"] = [output, input];
        if (bias) shapes[name + ".bias"] = [output];
    }
}
