using System.Text.Json.Nodes;

namespace PpoSharp.Models.Hf;

/// <summary>
/// GPT2LMHeadModel: LayerNorm, a learned position table, a GELU MLP, and Conv1D layers whose weights are stored as
/// (in, out), the transpose of a Linear's; q, k and v come fused in <c>c_attn</c> in that order. The built-in model is
/// this architecture too (with the exact GELU and, by default, an untied head).
/// </summary>
public sealed class Gpt2 : HfArchitecture
{
    public override string CausalLm => "GPT2LMHeadModel";
    public override string ModelType => "gpt2";
    public override string Prefix => "transformer.";
    public override IReadOnlyList<string> DefaultLoraTargets => ["c_attn"];
    public override string SequenceClassification => "GPT2ForSequenceClassification";

    private static readonly Dictionary<string, MlpKind> Activations = new()
    {
        ["gelu"] = MlpKind.Gelu, ["gelu_new"] = MlpKind.GeluTanh, ["gelu_pytorch_tanh"] = MlpKind.GeluTanh,
    };

    public override DecoderSpec ReadSpec(HfConfig c)
    {
        var act = c.String("activation_function", "gelu_new");
        if (!Activations.TryGetValue(act, out var mlp))
            throw new PpoSharpException($"{c.Path}: activation_function '{act}' is not supported (supported: {string.Join(", ", Activations.Keys)})");
        if (c.Bool("scale_attn_by_inverse_layer_idx", false)) throw new PpoSharpException($"{c.Path}: scale_attn_by_inverse_layer_idx true is not supported");
        if (!c.Bool("scale_attn_weights", true)) throw new PpoSharpException($"{c.Path}: scale_attn_weights false is not supported");
        int d = c.Int("n_embd");
        return new DecoderSpec(c.Int("vocab_size"), c.Int("n_positions"), c.Int("n_layer"), c.Int("n_head"), d)
        {
            Intermediate = c.Int("n_inner", 4 * d), NormEps = c.Double("layer_norm_epsilon", 1e-5), Mlp = mlp,
            TiedHead = c.Bool("tie_word_embeddings", true),
        };
    }

    public override void WriteSpec(DecoderSpec s, JsonObject config)
    {
        config["vocab_size"] = s.VocabSize;
        config["n_embd"] = s.DModel;
        config["n_layer"] = s.NLayer;
        config["n_head"] = s.NHead;
        config["n_positions"] = s.ContextLength;
        config["n_ctx"] = s.ContextLength;
        config["n_inner"] = s.MlpWidth;
        config["activation_function"] = Activations.First(p => p.Value == s.Mlp).Key;
        config["layer_norm_epsilon"] = s.NormEps;
        config["tie_word_embeddings"] = s.TiedHead;
    }

    public override IEnumerable<WeightMap> Backbone(DecoderSpec s)
    {
        yield return new("embed.weight", "wte.weight");
        yield return new("pos_embed.weight", "wpe.weight");
        for (int i = 0; i < s.NLayer; i++)
        {
            string l = $"layers.{i}.", h = $"h.{i}.";
            foreach (var (ours, hf, layout) in new[]
            {
                ("attn_norm", "ln_1", WeightLayout.Same), ("qkv", "attn.c_attn", WeightLayout.Transposed), ("out", "attn.c_proj", WeightLayout.Transposed),
                ("mlp_norm", "ln_2", WeightLayout.Same), ("up", "mlp.c_fc", WeightLayout.Transposed), ("down", "mlp.c_proj", WeightLayout.Transposed),
            })
            {
                yield return new(l + ours + ".weight", h + hf + ".weight", layout);
                yield return new(l + ours + ".bias", h + hf + ".bias");
            }
        }
        yield return new("norm.weight", "ln_f.weight");
        yield return new("norm.bias", "ln_f.bias");
    }

    /// <summary>Old GPT-2 checkpoints keep the causal-mask buffers <c>attn.bias</c> and <c>attn.masked_bias</c>.</summary>
    public override bool Ignored(string name) =>
        name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal);

    /// <summary>The original GPT-2 files name tensors without <c>transformer.</c>.</summary>
    public override string Normalize(string name) =>
        name.StartsWith(Prefix, StringComparison.Ordinal) || name.StartsWith("lm_head.", StringComparison.Ordinal) || name.StartsWith("score.", StringComparison.Ordinal)
            ? name : Prefix + name;
}
