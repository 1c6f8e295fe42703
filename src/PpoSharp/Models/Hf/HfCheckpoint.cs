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

    /// <summary>The HF tensors of the decoder (and of a head with parameters <paramref name="head"/>, as <c>score.*</c>), in the model's naming.</summary>
    private static List<WeightMap> Maps(HfModelInfo info, DecoderSpec spec, IReadOnlyDictionary<string, long[]>? head, bool mlpHead)
    {
        var maps = info.Arch.Backbone(spec).Select(m => m with { Hf = m.Hf.Select(n => info.Arch.Prefix + n).ToArray() }).ToList();
        if (head is null && !spec.TiedHead) maps.Add(new("lm_head.weight", "lm_head.weight"));
        if (head is not null)
            maps.AddRange(head.Keys.Select(name => new WeightMap("score:" + name, mlpHead ? "score." + name : "score.weight")));
        return maps;
    }

    private static Dictionary<string, long[]>? HeadShapes(ScalarHead? head) =>
        head?.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);

    /// <summary>
    /// Checks a folder's weights against <paramref name="spec"/> from the safetensors headers alone, before anything is
    /// allocated: every tensor the spec needs is present, none is unexpected, each is floating point and of the shape the
    /// spec implies (each part of a fused projection on its own), and the model fits in the memory available. A folder
    /// that fails is refused in one line without reading its tensor data. The result loads the weights (<see cref="CheckedWeights.Into"/>).
    /// </summary>
    public static CheckedWeights CheckWeights(string dir, HfModelInfo info, DecoderSpec spec)
    {
        var files = SafetensorsFolder.Open(dir);
        var stored = new Dictionary<string, string>();                                        // normalized name -> stored name
        foreach (var name in files.Names)
            if (!stored.TryAdd(info.Arch.Normalize(name), name))
                throw new PpoSharpException($"{dir}: tensor '{name}' is stored twice (with and without the '{info.Arch.Prefix}' prefix)");
        var head = info.ScalarHead ? ScalarHead.Shapes(spec.DModel, info.MlpHead) : null;
        var maps = Maps(info, spec, head, info.MlpHead);
        var needed = maps.SelectMany(m => m.Hf).ToHashSet();
        foreach (var name in needed.Where(n => !stored.ContainsKey(n)))
            throw new PpoSharpException($"{dir}: tensor '{name}' is missing from the weights");
        var unexpected = stored.Keys.Where(n => !needed.Contains(n) && !info.Arch.Ignored(n) && !(n == "lm_head.weight" && spec.TiedHead)).ToList();
        if (unexpected.Count > 0)
            throw new PpoSharpException($"{dir}: unexpected tensor '{unexpected[0]}'{(unexpected.Count > 1 ? $" and {unexpected.Count - 1} more" : "")} (the weights do not match config.json)");
        var ours = spec.ParameterShapes();
        foreach (var (name, shape) in head ?? []) ours["score:" + name] = shape;
        var weights = new CheckedWeights(dir, files, stored, maps, spec);
        foreach (var m in maps) weights.CheckShape(m, ours[m.Ours]);
        MemoryCheck.Fits(dir, ours.Values.Sum(s => (double)Numel(s)) * sizeof(float), needed.Max(n => (double)files.Entry(stored[n]).End - files.Entry(stored[n]).Begin));
        return weights;
    }

    internal static long Numel(long[] shape) => shape.Aggregate(1L, (n, d) => n * d);

    /// <summary>Copies a folder's weights into <paramref name="model"/> (and <paramref name="head"/>), after <see cref="CheckWeights"/>.</summary>
    public static void Load(string dir, HfModelInfo info, Decoder model, ScalarHead? head = null) =>
        CheckWeights(dir, info with { ScalarHead = head is not null, MlpHead = head?.IsMlp ?? false }, model.Config).Into(model, head);

    internal static Dictionary<string, Tensor> Parameters(Decoder model, ScalarHead? head)
    {
        var all = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        if (head is not null) foreach (var (name, p) in head.named_parameters()) all["score:" + name] = p;
        return all;
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
            foreach (var m in Maps(info, model.Config, HeadShapes(head), head?.IsMlp ?? false))
                tensors.AddRange(Split(m, ours[m.Ours].detach().cpu().to(info.StoredDtype), model.Config));
        Safetensors.SaveFolder(dir, tensors);
        AtomicFile.WriteText(Path.Combine(dir, "config.json"), config.ToJsonString(Json.Options));
    }

    private static IEnumerable<KeyValuePair<string, Tensor>> Split(WeightMap m, Tensor t, DecoderSpec s)
    {
        if (m.Layout == WeightLayout.Transposed) return [new(m.Hf[0], t.t().contiguous())];
        if (m.Layout == WeightLayout.Same) return [new(m.Hf[0], t.contiguous())];
        var parts = t.split(s.QkvRows, 0);                                                    // q, k, v rows of the fused projection
        return m.Hf.Zip(parts, (n, p) => new KeyValuePair<string, Tensor>(n, p.contiguous()));
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
