using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Models.Hf;

/// <summary>
/// What a model folder's <c>config.json</c> says: the architecture family, whether it is a causal LM or carries a scalar
/// head (<c>*ForSequenceClassification</c>: reward model or critic), the whole config (kept when saving back) and the dtype
/// its weights are stored in.
/// </summary>
public sealed record HfModelInfo(HfArchitecture Arch, bool ScalarHead, JsonObject Config, ScalarType StoredDtype, string? Directory = null)
{
    /// <summary>The scalar head is the notes' MLP (architectures <c>*WithMlpScoreHead</c>), not the linear <c>score</c>.</summary>
    public bool MlpHead { get; init; }

    /// <summary>A new built-in model: GPT-2's layout, fp32.</summary>
    public static HfModelInfo BuiltIn() => new(new Gpt2(), false, new JsonObject(), ScalarType.Float32);
}

/// <summary>
/// Loads and saves Hugging Face model folders (config.json + safetensors) into and out of the shared <see cref="Decoder"/>
/// through an architecture's <see cref="WeightMap"/> table: every tensor's name and shape is checked, missing and
/// unexpected tensors are named, tied heads are stored once, and weights are written back in the base model's dtype.
/// </summary>
public static class HfCheckpoint
{
    /// <summary>The architecture, spec and stored dtype of a model folder, from its config.json alone.</summary>
    public static (HfModelInfo Info, DecoderSpec Spec) Read(string dir)
    {
        var config = HfConfig.Read(dir);
        var (arch, scalarHead, mlpHead) = HfArchitecture.Find(config.Architecture(), config.Path);
        try
        {
            var spec = arch.ReadSpec(config).Validate();
            return (new HfModelInfo(arch, scalarHead, config.Json, StoredDtype(config, dir), dir) { MlpHead = mlpHead }, spec);
        }
        catch (PpoSharpException e) when (!e.Message.StartsWith(config.Path, StringComparison.Ordinal)) { throw new PpoSharpException($"{config.Path}: {e.Message}"); }
    }

    private static readonly Dictionary<string, ScalarType> DtypeNames = new()
    {
        ["float32"] = ScalarType.Float32, ["bfloat16"] = ScalarType.BFloat16, ["float16"] = ScalarType.Float16,
    };

    /// <summary>The weights' dtype: <c>torch_dtype</c> (or v5's <c>dtype</c>), else the first stored tensor's.</summary>
    private static ScalarType StoredDtype(HfConfig c, string dir)
    {
        var name = c.String("torch_dtype", c.String("dtype", "")) is { Length: > 0 } n ? n : Safetensors.FirstDtype(dir);
        return DtypeNames.TryGetValue(name, out var t) ? t
            : throw new PpoSharpException($"{c.Path}: torch_dtype '{name}' is not supported (supported: {string.Join(", ", DtypeNames.Keys)})");
    }

    /// <summary>The HF tensors of the decoder (and the head's, as <c>score.*</c>), in the model's naming.</summary>
    private static List<WeightMap> Maps(HfModelInfo info, DecoderSpec spec, ScalarHead? head)
    {
        var maps = info.Arch.Backbone(spec).Select(m => m with { Hf = m.Hf.Select(n => info.Arch.Prefix + n).ToArray() }).ToList();
        if (head is null && !spec.TiedHead) maps.Add(new("lm_head.weight", "lm_head.weight"));
        if (head is not null)
            maps.AddRange(head.named_parameters().Select(p => new WeightMap("score:" + p.name, head.IsMlp ? "score." + p.name : "score.weight")));
        return maps;
    }

    /// <summary>Copies a folder's weights into <paramref name="model"/> (and <paramref name="head"/>), after checking every name and shape.</summary>
    public static void Load(string dir, HfModelInfo info, Decoder model, ScalarHead? head = null)
    {
        var raw = Safetensors.LoadFolder(dir);
        var stored = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (name, t) in raw)
                if (!stored.TryAdd(info.Arch.Normalize(name), t))
                    throw new PpoSharpException($"{dir}: tensor '{name}' is stored twice (with and without the '{info.Arch.Prefix}' prefix)");
            var maps = Maps(info, model.Config, head);
            var ours = Parameters(model, head);
            var needed = maps.SelectMany(m => m.Hf).ToHashSet();
            foreach (var name in needed.Where(n => !stored.ContainsKey(n)))
                throw new PpoSharpException($"{dir}: tensor '{name}' is missing from the weights");
            var unexpected = stored.Keys.Where(n => !needed.Contains(n) && !info.Arch.Ignored(n) && !(n == "lm_head.weight" && model.Config.TiedHead)).ToList();
            if (unexpected.Count > 0)
                throw new PpoSharpException($"{dir}: unexpected tensor '{unexpected[0]}'{(unexpected.Count > 1 ? $" and {unexpected.Count - 1} more" : "")} (the weights do not match config.json)");
            using var _ = no_grad();
            foreach (var m in maps) Copy(dir, m, stored, ours[m.Ours]);
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    private static Dictionary<string, Tensor> Parameters(Decoder model, ScalarHead? head)
    {
        var all = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        if (head is not null) foreach (var (name, p) in head.named_parameters()) all["score:" + name] = p;
        return all;
    }

    private static void Copy(string dir, WeightMap m, Dictionary<string, Tensor> stored, Tensor target)
    {
        var parts = m.Hf.Select(n => stored[n]).ToArray();
        foreach (var (name, t) in m.Hf.Zip(parts))
            if (!t.is_floating_point()) throw new PpoSharpException($"{dir}: tensor '{name}' is {t.dtype}, a weight must be floating point (F32, BF16 or F16)");
        using var source = m.Layout switch
        {
            WeightLayout.Transposed => parts[0].t(),
            WeightLayout.Concat => cat(parts, 0),
            _ => parts[0].alias(),
        };
        if (!source.shape.SequenceEqual(target.shape))
            throw new PpoSharpException($"{dir}: tensor '{string.Join("', '", m.Hf)}' has shape [{string.Join(", ", parts.Select(p => string.Join("x", p.shape)))}], config.json implies [{string.Join("x", target.shape)}]{(m.Layout == WeightLayout.Transposed ? " transposed" : "")}");
        target.copy_(source);
    }

    /// <summary>
    /// Writes <paramref name="model"/> (with <paramref name="head"/> as <c>score</c>, a *ForSequenceClassification folder) into
    /// <paramref name="dir"/>: config.json of the same architecture (the base config's other keys kept, <paramref name="extra"/>
    /// added), and safetensors in the stored dtype, sharded above 2 GB.
    /// </summary>
    public static void Save(string dir, HfModelInfo info, Decoder model, ScalarHead? head, IReadOnlyDictionary<string, JsonNode?> extra)
    {
        Directory.CreateDirectory(dir);
        var config = WriteConfig(info, model.Config, head, extra);
        var ours = Parameters(model, head);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        using var scope = NewDisposeScope();
        using (no_grad())
            foreach (var m in Maps(info, model.Config, head))
                tensors.AddRange(Split(m, ours[m.Ours].detach().cpu().to(info.StoredDtype), model.Config));
        Safetensors.SaveFolder(dir, tensors);
        AtomicFile.WriteText(Path.Combine(dir, "config.json"), config.ToJsonString(Json.Options));
    }

    private static IEnumerable<KeyValuePair<string, Tensor>> Split(WeightMap m, Tensor t, DecoderSpec s)
    {
        if (m.Layout == WeightLayout.Transposed) return [new(m.Hf[0], t.t().contiguous())];
        if (m.Layout == WeightLayout.Same) return [new(m.Hf[0], t.contiguous())];
        long q = s.NHead * s.HeadDim, kv = s.KvHeadCount * s.HeadDim;                       // q, k, v rows of the fused projection
        return m.Hf.Zip([t.narrow(0, 0, q), t.narrow(0, q, kv), t.narrow(0, q + kv, kv)], (n, p) => new KeyValuePair<string, Tensor>(n, p.contiguous()));
    }

    private static JsonObject WriteConfig(HfModelInfo info, DecoderSpec spec, ScalarHead? head, IReadOnlyDictionary<string, JsonNode?> extra)
    {
        var config = (JsonObject)info.Config.DeepClone();
        config["architectures"] = new JsonArray(head is null ? info.Arch.CausalLm : head.IsMlp ? info.Arch.MlpScoreModel : info.Arch.SequenceClassification);
        config["model_type"] = info.Arch.ModelType;
        info.Arch.WriteSpec(spec, config);
        config["torch_dtype"] = DtypeNames.First(p => p.Value == info.StoredDtype).Key;
        if (config.ContainsKey("dtype")) config["dtype"] = config["torch_dtype"]!.DeepClone();        // transformers v5's name
        if (head is not null)
        {
            config["num_labels"] = 1;
            config["id2label"] = new JsonObject { ["0"] = "LABEL_0" };
            config["label2id"] = new JsonObject { ["LABEL_0"] = 0 };
        }
        foreach (var (key, value) in extra) config[key] = value?.DeepClone();
        return config;
    }
}
