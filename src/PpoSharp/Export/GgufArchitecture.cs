using PpoSharp.Models;
using PpoSharp.Models.Hf;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Export;

/// <summary>
/// One llama.cpp architecture as a small table, as convert_hf_to_gguf.py keeps them: the <c>general.architecture</c>
/// name, the hyper-parameter keys, and each decoder parameter's GGUF tensor name (gguf-py's constants.py:
/// <c>token_embd</c>, <c>blk.N.attn_q</c>, ...) with the layout change llama.cpp needs.
/// </summary>
public abstract class GgufArchitecture
{
    /// <summary>llama.cpp's architecture name (<c>general.architecture</c> and the prefix of its keys).</summary>
    public abstract string Name { get; }

    /// <summary>The GGUF table of a model's Hugging Face family; a family llama.cpp lacks is refused naming the supported ones.</summary>
    public static GgufArchitecture For(HfArchitecture arch) => arch switch
    {
        Qwen2 => new LlamaFamily("qwen2", permuteQk: false),      // llama.cpp runs Qwen with NEOX (rotate-half) RoPE: no permutation
        Qwen3 => new LlamaFamily("qwen3", permuteQk: false),
        Llama => new LlamaFamily("llama", permuteQk: true),       // Llama and Mistral (convert_hf_to_gguf.py writes Mistral as llama)
        Gpt2 => new Gpt2Family(),
        _ => throw new PpoSharpException($"architecture {arch.CausalLm} has no GGUF table (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GPT2LMHeadModel)"),
    };

    /// <summary>The <c>{arch}.*</c> hyper-parameters of llama.cpp's loader.</summary>
    public virtual void AddMetadata(GgufWriter w, DecoderSpec s)
    {
        w.Add("general.architecture", Name);
        w.Add($"{Name}.context_length", (uint)s.ContextLength);
        w.Add($"{Name}.embedding_length", (uint)s.DModel);
        w.Add($"{Name}.block_count", (uint)s.NLayer);
        w.Add($"{Name}.feed_forward_length", (uint)s.MlpWidth);
        w.Add($"{Name}.attention.head_count", (uint)s.NHead);
        w.Add($"{Name}.attention.head_count_kv", (uint)s.KvHeadCount);
        w.Add($"{Name}.attention.key_length", (uint)s.HeadDim);
        w.Add($"{Name}.attention.value_length", (uint)s.HeadDim);
        w.Add($"{Name}.attention.{(s.Norm == NormKind.RmsNorm ? "layer_norm_rms_epsilon" : "layer_norm_epsilon")}", (float)s.NormEps);
    }

    /// <summary>(GGUF name, fp32 tensor in torch's shape) for every tensor of the file, from the decoder's parameters.</summary>
    public abstract IEnumerable<(string Name, Tensor Value)> Tensors(DecoderSpec s, IReadOnlyDictionary<string, Tensor> p);

    /// <summary>The block-level names every family shares: norms, attention output, MLP.</summary>
    protected static IEnumerable<(string, Tensor)> Common(IReadOnlyDictionary<string, Tensor> p, int i)
    {
        foreach (var (ours, gguf) in new[] { ("attn_norm", "attn_norm"), ("out", "attn_output"), ("mlp_norm", "ffn_norm"), ("gate", "ffn_gate"), ("up", "ffn_up"), ("down", "ffn_down"), ("q_norm", "attn_q_norm"), ("k_norm", "attn_k_norm") })
            foreach (var kind in new[] { "weight", "bias" })
                if (p.TryGetValue($"layers.{i}.{ours}.{kind}", out var t)) yield return ($"blk.{i}.{gguf}.{kind}", t);
    }

    protected static IEnumerable<(string, Tensor)> OutputNorm(IReadOnlyDictionary<string, Tensor> p) =>
        new[] { "weight", "bias" }.Where(k => p.ContainsKey("norm." + k)).Select(k => ($"output_norm.{k}", p["norm." + k]));
}

/// <summary>
/// llama, qwen2, qwen3: RMSNorm, RoPE, SwiGLU; q, k, v as separate tensors. Llama's q and k rows are permuted from
/// Hugging Face's rotate-half order to the interleaved pairs of GGML's normal RoPE (convert_hf_to_gguf.py's
/// <c>LlamaModel.permute</c>); Qwen runs NEOX RoPE, which is rotate-half, so its rows stay. A tied head writes no
/// <c>output.weight</c>: llama.cpp then uses <c>token_embd</c>.
/// </summary>
public sealed class LlamaFamily(string name, bool permuteQk) : GgufArchitecture
{
    public override string Name => name;

    public override void AddMetadata(GgufWriter w, DecoderSpec s)
    {
        base.AddMetadata(w, s);
        w.Add($"{Name}.rope.freq_base", (float)s.RopeTheta);
        w.Add($"{Name}.rope.dimension_count", (uint)s.HeadDim);
        if (s.RopeScaling is { Llama3: false } linear)
        {
            w.Add($"{Name}.rope.scaling.type", "linear");
            w.Add($"{Name}.rope.scaling.factor", (float)linear.Factor);
        }
    }

    public override IEnumerable<(string Name, Tensor Value)> Tensors(DecoderSpec s, IReadOnlyDictionary<string, Tensor> p)
    {
        yield return ("token_embd.weight", p["embed.weight"]);
        if (s.RopeScaling is { Llama3: true })                                   // Llama 3.1: per-frequency divisors
        {
            float[] plain = Rope.InverseFrequencies(s with { RopeScaling = null }), scaled = Rope.InverseFrequencies(s);
            yield return ("rope_freqs.weight", tensor(plain.Zip(scaled, (a, b) => a / b).ToArray()));
        }
        for (int i = 0; i < s.NLayer; i++)
        {
            foreach (var kind in new[] { "weight", "bias" })
            {
                if (!p.TryGetValue($"layers.{i}.qkv.{kind}", out var qkv)) continue;
                long q = s.NHead * s.HeadDim, kv = s.KvHeadCount * s.HeadDim;       // rows of the fused projection
                yield return ($"blk.{i}.attn_q.{kind}", Permute(qkv.narrow(0, 0, q), s.NHead));
                yield return ($"blk.{i}.attn_k.{kind}", Permute(qkv.narrow(0, q, kv), s.KvHeadCount));
                yield return ($"blk.{i}.attn_v.{kind}", qkv.narrow(0, q + kv, kv));
            }
            foreach (var t in Common(p, i)) yield return t;
        }
        foreach (var t in OutputNorm(p)) yield return t;
        if (p.TryGetValue("lm_head.weight", out var head)) yield return ("output.weight", head);
    }

    /// <summary>
    /// Within each head, row r of the first half and row r of the second half (HF's rotate-half pairs) become rows 2r and
    /// 2r+1 (GGML's adjacent pairs): view (heads, 2, hd/2, ...) and swap the middle two axes.
    /// </summary>
    private Tensor Permute(Tensor w, long heads)
    {
        if (!permuteQk) return w;
        var shape = w.shape;
        long[] view = [heads, 2, shape[0] / heads / 2, .. shape.Skip(1)];
        return w.reshape(view).transpose(1, 2).reshape(shape);
    }
}

/// <summary>
/// gpt2: LayerNorm with biases, a learned position table, the fused q/k/v projection (<c>attn_qkv</c>, q, k, v rows in
/// that order, as our decoder keeps them: HF's Conv1D weights transposed), GELU MLP. llama.cpp's gpt2 graph needs
/// <c>output.weight</c>, so a tied head writes a copy of the embeddings.
/// </summary>
public sealed class Gpt2Family : GgufArchitecture
{
    public override string Name => "gpt2";

    public override IEnumerable<(string Name, Tensor Value)> Tensors(DecoderSpec s, IReadOnlyDictionary<string, Tensor> p)
    {
        yield return ("token_embd.weight", p["embed.weight"]);
        yield return ("position_embd.weight", p["pos_embed.weight"]);
        for (int i = 0; i < s.NLayer; i++)
        {
            foreach (var kind in new[] { "weight", "bias" })
                if (p.TryGetValue($"layers.{i}.qkv.{kind}", out var qkv)) yield return ($"blk.{i}.attn_qkv.{kind}", qkv);
            foreach (var t in Common(p, i)) yield return t;
        }
        foreach (var t in OutputNorm(p)) yield return t;
        yield return ("output.weight", p.TryGetValue("lm_head.weight", out var head) ? head : p["embed.weight"]);
    }
}
