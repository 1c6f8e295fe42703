using System.Text.Json.Nodes;

namespace PpoSharp.Models.Hf;

/// <summary>
/// LlamaForCausalLM (Llama 2, 3, 3.1, 3.2, SmolLM): RMSNorm, RoPE (with Llama 3.1 scaling), SwiGLU, grouped-query
/// attention, optional attention and MLP biases. Mistral and Qwen are this table with small differences.
/// </summary>
public class Llama : HfArchitecture
{
    public override string CausalLm => "LlamaForCausalLM";
    public override string ModelType => "llama";
    public override string Prefix => "model.";
    public override IReadOnlyList<string> DefaultLoraTargets => ["q_proj", "v_proj"];

    /// <summary>Biases on q, k, v (and whether o has one) from the config: Llama's <c>attention_bias</c> covers all four.</summary>
    protected virtual (bool Qkv, bool Out) AttentionBias(HfConfig c) { var b = c.Bool("attention_bias", false); return (b, b); }

    protected virtual bool QkNorm => false;

    public override DecoderSpec ReadSpec(HfConfig c)
    {
        var act = c.String("hidden_act", "silu");
        if (act != "silu") throw new PpoSharpException($"{c.Path}: hidden_act '{act}' is not supported for {CausalLm} (only silu)");
        int hidden = c.Int("hidden_size"), heads = c.Int("num_attention_heads");
        var (qkvBias, outBias) = AttentionBias(c);
        var (theta, scaling) = ReadRope(c);
        return new DecoderSpec(c.Int("vocab_size"), ContextLength(c), c.Int("num_hidden_layers"), heads, hidden)
        {
            KvHeads = c.Int("num_key_value_heads", heads), HeadSize = c.Int("head_dim", 0), Intermediate = c.Int("intermediate_size"),
            Norm = NormKind.RmsNorm, NormEps = c.Double("rms_norm_eps", 1e-6), Positions = PositionKind.Rope, RopeTheta = theta, RopeScaling = scaling,
            Mlp = MlpKind.SwiGlu, QkvBias = qkvBias, OutBias = outBias, MlpBias = c.Bool("mlp_bias", false), QkNorm = QkNorm,
            TiedHead = c.Bool("tie_word_embeddings", false),
        };
    }

    protected virtual int ContextLength(HfConfig c) => c.Int("max_position_embeddings", 2048);

    /// <summary>Qwen's <c>use_sliding_window</c> (on in no released checkpoint) changes attention in some layers; this decoder does not implement it.</summary>
    protected static DecoderSpec RefuseSlidingWindow(HfConfig c, DecoderSpec spec) => c.Bool("use_sliding_window", false)
        ? throw new PpoSharpException($"{c.Path}: use_sliding_window true is not supported (sliding-window attention is not implemented)") : spec;

    /// <summary>rope_theta and scaling from the legacy <c>rope_scaling</c> key or transformers v5's <c>rope_parameters</c>.</summary>
    private static (double Theta, RopeScaling? Scaling) ReadRope(HfConfig c)
    {
        var key = c.Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
        if (c.Object(key) is not { } o) return (c.Double("rope_theta", 10000), null);
        var p = new HfConfig(o, $"{c.Path}: {key}");                                  // errors name the file and the section
        double theta = p.Double("rope_theta", c.Double("rope_theta", 10000));
        var type = p.String("rope_type", p.String("type", "default"));
        return type switch
        {
            "default" => (theta, null),
            "linear" => (theta, new RopeScaling(p.Double("factor"))),
            "llama3" => (theta, new RopeScaling(p.Double("factor"), true, p.Double("low_freq_factor"), p.Double("high_freq_factor"), p.Int("original_max_position_embeddings"))),
            _ => throw new PpoSharpException($"{c.Path}: rope type '{type}' is not supported (supported: default, linear, llama3)"),
        };
    }

    public override void WriteSpec(DecoderSpec s, JsonObject config)
    {
        config["vocab_size"] = s.VocabSize;
        config["hidden_size"] = s.DModel;
        config["intermediate_size"] = s.MlpWidth;
        config["num_hidden_layers"] = s.NLayer;
        config["num_attention_heads"] = s.NHead;
        config["num_key_value_heads"] = s.KvHeadCount;
        config["head_dim"] = s.HeadDim;
        config["rms_norm_eps"] = s.NormEps;
        config["tie_word_embeddings"] = s.TiedHead;
        config["hidden_act"] = "silu";
    }

    public override IEnumerable<WeightMap> Backbone(DecoderSpec s)
    {
        yield return new("embed.weight", "embed_tokens.weight");
        for (int i = 0; i < s.NLayer; i++)
        {
            string l = $"layers.{i}.", a = $"layers.{i}.self_attn.", m = $"layers.{i}.mlp.";
            yield return new(l + "attn_norm.weight", l + "input_layernorm.weight");
            yield return new(l + "qkv.weight", [a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"], WeightLayout.Concat);
            if (s.QkvBias) yield return new(l + "qkv.bias", [a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"], WeightLayout.Concat);
            if (s.QkNorm) yield return new(l + "q_norm.weight", a + "q_norm.weight");
            if (s.QkNorm) yield return new(l + "k_norm.weight", a + "k_norm.weight");
            yield return new(l + "out.weight", a + "o_proj.weight");
            if (s.OutBias) yield return new(l + "out.bias", a + "o_proj.bias");
            yield return new(l + "mlp_norm.weight", l + "post_attention_layernorm.weight");
            foreach (var (ours, hf) in new[] { ("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj") })
            {
                yield return new(l + ours + ".weight", m + hf + ".weight");
                if (s.MlpBias) yield return new(l + ours + ".bias", m + hf + ".bias");
            }
        }
        yield return new("norm.weight", "norm.weight");
    }
}

/// <summary>MistralForCausalLM: Llama without biases; the context is capped at <c>sliding_window</c>, which this decoder does not implement.</summary>
public sealed class Mistral : Llama
{
    public override string CausalLm => "MistralForCausalLM";
    public override string ModelType => "mistral";
    protected override (bool Qkv, bool Out) AttentionBias(HfConfig c) => (false, false);

    protected override int ContextLength(HfConfig c) =>
        c.Has("sliding_window") ? Math.Min(base.ContextLength(c), c.Int("sliding_window")) : base.ContextLength(c);
}

/// <summary>Qwen2ForCausalLM: Llama plus biases on q, k and v (not on o).</summary>
public sealed class Qwen2 : Llama
{
    public override string CausalLm => "Qwen2ForCausalLM";
    public override string ModelType => "qwen2";
    protected override (bool Qkv, bool Out) AttentionBias(HfConfig c) => (true, false);

    public override DecoderSpec ReadSpec(HfConfig c) => RefuseSlidingWindow(c, base.ReadSpec(c));
}

/// <summary>Qwen3ForCausalLM: Llama plus RMSNorm of each query and key head (q_norm, k_norm); head_dim may differ from hidden / heads.</summary>
public sealed class Qwen3 : Llama
{
    public override string CausalLm => "Qwen3ForCausalLM";
    public override string ModelType => "qwen3";
    protected override bool QkNorm => true;

    public override DecoderSpec ReadSpec(HfConfig c) => RefuseSlidingWindow(c, base.ReadSpec(c));
}
