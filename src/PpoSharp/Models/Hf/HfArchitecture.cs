using System.Text.Json.Nodes;

namespace PpoSharp.Models.Hf;

/// <summary>How a Hugging Face tensor relates to the decoder's parameter.</summary>
public enum WeightLayout
{
    /// <summary>The same tensor.</summary>
    Same,
    /// <summary>Stored transposed: GPT-2's Conv1D keeps weights as (in, out), a Linear's transpose.</summary>
    Transposed,
    /// <summary>Several HF tensors stacked along rows: q_proj, k_proj and v_proj into the fused qkv projection.</summary>
    Concat,
}

/// <summary>One decoder parameter (<see cref="Ours"/>) and the HF tensor names it is made of, without the backbone prefix.</summary>
public sealed record WeightMap(string Ours, string[] Hf, WeightLayout Layout = WeightLayout.Same)
{
    public WeightMap(string ours, string hf, WeightLayout layout = WeightLayout.Same) : this(ours, [hf], layout) { }
}

/// <summary>
/// One Hugging Face architecture family as a small table over the shared <see cref="Decoder"/>: which config.json keys
/// make the <see cref="DecoderSpec"/>, the tensor names of each parameter, and how to write the config back.
/// </summary>
public abstract class HfArchitecture
{
    /// <summary>The <c>architectures</c> name of the causal LM, e.g. LlamaForCausalLM.</summary>
    public abstract string CausalLm { get; }
    public abstract string ModelType { get; }
    /// <summary>The prefix of backbone tensors (<c>model.</c>, <c>transformer.</c>).</summary>
    public abstract string Prefix { get; }

    /// <summary>The <c>architectures</c> name of the same backbone with a scalar head (<c>score</c>), as TRL and OpenRLHF load reward models.</summary>
    public virtual string SequenceClassification => CausalLm.Replace("ForCausalLM", "ForSequenceClassification", StringComparison.Ordinal);

    /// <summary>
    /// The <c>architectures</c> name of the backbone with the notes' MLP score head (built-in reward models and critics): a
    /// name of PpoSharp's own, so that transformers refuses the folder instead of loading it with a random <c>score</c>.
    /// </summary>
    public string MlpScoreModel => SequenceClassification.Replace("ForSequenceClassification", "WithMlpScoreHead", StringComparison.Ordinal);

    /// <summary>peft's default LoRA target modules for the architecture (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).</summary>
    public abstract IReadOnlyList<string> DefaultLoraTargets { get; }

    public abstract DecoderSpec ReadSpec(HfConfig c);

    /// <summary>Writes the spec's keys into a config.json object (the other keys of a base model's config stay as they were).</summary>
    public abstract void WriteSpec(DecoderSpec s, JsonObject config);

    /// <summary>The backbone's parameters: embeddings, blocks, final norm (without the LM head).</summary>
    public abstract IEnumerable<WeightMap> Backbone(DecoderSpec s);

    /// <summary>Tensors that checkpoints may hold and the decoder does not use (old buffers).</summary>
    public virtual bool Ignored(string name) => name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>A stored name with the backbone prefix where a checkpoint left it out (GPT-2 files exist both ways).</summary>
    public virtual string Normalize(string name) => name;

    public static readonly IReadOnlyList<HfArchitecture> All = [new Llama(), new Mistral(), new Qwen2(), new Qwen3(), new Gpt2()];

    /// <summary>
    /// The family of an <c>architectures</c> name and its head: the LM head, a linear score (sequence classification) or
    /// the MLP score head; anything else is refused naming the supported ones.
    /// </summary>
    public static (HfArchitecture Arch, bool ScalarHead, bool MlpHead) Find(string name, string path)
    {
        foreach (var a in All)
        {
            if (a.CausalLm == name) return (a, false, false);
            if (a.SequenceClassification == name) return (a, true, false);
            if (a.MlpScoreModel == name) return (a, true, true);
        }
        throw new PpoSharpException($"{path}: architecture '{name}' is not supported (supported: {string.Join(", ", All.Select(a => a.CausalLm))}, and their ForSequenceClassification reward models)");
    }
}
