using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Export;

/// <summary>The tensor type of a GGUF export (convert_hf_to_gguf.py's <c>--outtype</c>).</summary>
public enum GgufOutType
{
    F32,
    F16,
    Bf16,
    /// <summary>llama.cpp's 8-bit blocks (<see cref="GgmlType.Q8_0"/>).</summary>
    Q8_0,
}

/// <summary>
/// <c>export --format gguf</c>: any model folder that <c>generate</c> takes (an HF folder, a run, a LoRA run merged
/// into its base) as one GGUF file for llama.cpp, LLamaSharp, Ollama and LM Studio.
/// </summary>
public static class GgufExport
{
    /// <summary>
    /// Writes <paramref name="outPath"/> from the policy in <paramref name="modelDir"/>: 2-D weights in
    /// <paramref name="outType"/>, norms, biases and the position table in F32 (as convert_hf_to_gguf.py keeps them),
    /// through a temporary file in the same folder that is renamed when complete (<paramref name="open"/> opens it; tests
    /// pass a failing stream). Returns a summary line.
    /// </summary>
    public static string Run(string modelDir, string outPath, GgufOutType outType, bool force = false, Func<string, Stream>? open = null)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(outPath))!;
        if (!Directory.Exists(folder)) throw new PpoSharpException($"--out {outPath}: folder {folder} does not exist");
        if (Directory.Exists(outPath)) throw new PpoSharpException($"--out {outPath}: is a directory; a GGUF export is one file (e.g. model.gguf)");
        if (File.Exists(outPath) && !force) throw new PpoSharpException($"--out {outPath}: exists (use --force to replace it)");
        if (Directory.Exists(modelDir) && Path.GetFullPath(folder).TrimEnd('/') == Path.GetFullPath(modelDir).TrimEnd('/'))
            throw new PpoSharpException($"--out {outPath}: inside the model folder {modelDir}; write the GGUF file elsewhere (a command never writes into its inputs)");
        if (RunDirectory.IsScalarModel(modelDir))
            throw new PpoSharpException($"{modelDir}: holds a reward model or critic (a scalar head), which llama.cpp cannot run; export a policy");
        var model = RunDirectory.LoadPolicyModel(modelDir);
        var arch = GgufArchitecture.For(model.Format.Arch);
        var tokenizer = HasTokenizer(modelDir) ? RunDirectory.LoadTokenizer(modelDir) : null;
        var (tensors, bytes) = Write(model, tokenizer, outPath, outType, Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/')), open);
        return $"export: {modelDir} ({model.Format.Arch.CausalLm}) -> {outPath} (GGUF, {arch.Name}, {OptionName(outType)}, {tensors} tensors, {bytes / 1e6:F1} MB of weights)"
            + (tokenizer is null ? "; no tokenizer in the folder: llama.cpp gets the vocabulary size only and runs on token ids" : "")
            + (model.Config.Mlp == MlpKind.Gelu ? "; note: this model uses the exact (erf) GELU, llama.cpp's gpt2 graph the tanh approximation (logits move by ~1e-3)" : "");
    }

    /// <summary>Writes <paramref name="model"/> with <paramref name="tokenizer"/> (null: none) as a GGUF file; returns the tensor count and the bytes of weights.</summary>
    public static (int Tensors, long Bytes) Write(Decoder model, ITokenizer? tokenizer, string outPath, GgufOutType outType, string name, Func<string, Stream>? open = null)
    {
        var arch = GgufArchitecture.For(model.Format.Arch);
        CheckSupported(arch, model.Config, name);
        var w = new GgufWriter();
        w.Add("general.name", name);
        w.Add("general.file_type", FileType(outType));
        w.Add("general.quantization_version", 2u);
        arch.AddMetadata(w, model.Config);
        GgufVocabulary.Add(w, tokenizer, model.Config.VocabSize, arch.Name);
        long bytes = AddTensors(w, arch, model, outType);
        try
        {
            AtomicFile.Write(outPath, tmp =>
            {
                using var stream = open?.Invoke(tmp) ?? File.Create(tmp);
                w.Write(stream);
            });
        }
        catch (IOException e) { throw new PpoSharpException($"--out {outPath}: could not be written ({e.Message}); nothing was left under that name"); }
        return (w.TensorNames.Count(), bytes);
    }

    public static string OptionName(GgufOutType t) => Algorithms.OptionNames.Of(t);

    private static bool HasTokenizer(string dir) =>
        File.Exists(Path.Combine(dir, Tokenizers.FileName)) || Models.Hf.PeftAdapter.IsAdapter(dir) && File.Exists(Path.Combine(Models.Hf.PeftAdapter.BaseDir(dir), Tokenizers.FileName));

    /// <summary>llama.cpp's LLAMA_FTYPE: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.</summary>
    private static uint FileType(GgufOutType t) => t switch { GgufOutType.F32 => 0u, GgufOutType.F16 => 1u, GgufOutType.Q8_0 => 7u, _ => 32u };

    /// <summary>What llama.cpp's gpt2 graph cannot express, named before anything is written.</summary>
    private static void CheckSupported(GgufArchitecture arch, DecoderSpec s, string dir)
    {
        if (arch is Gpt2Family && (s.Norm != NormKind.LayerNorm || s.Positions != PositionKind.Learned || s.Mlp == MlpKind.SwiGlu || s.KvHeadCount != s.NHead))
            throw new PpoSharpException($"{dir}: a built-in model with {s.Norm}, {s.Positions} positions, {s.Mlp} MLP and {s.KvHeadCount} of {s.NHead} KV heads has no llama.cpp architecture (gpt2 needs LayerNorm, learned positions, a GELU MLP and all KV heads)");
    }

    /// <summary>Adds every tensor in its GGUF type; returns the bytes of weight data.</summary>
    private static long AddTensors(GgufWriter w, GgufArchitecture arch, Decoder model, GgufOutType outType)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var p = model.named_parameters().ToDictionary(x => x.name, x => x.parameter.detach().cpu().to(ScalarType.Float32));
        AddZeroBiases(arch, model.Config, p);
        long bytes = 0;
        foreach (var (name, t) in arch.Tensors(model.Config, p))
        {
            var type = TypeOf(name, t, outType);
            w.AddTensor(name, t.shape, type, t.contiguous().data<float>().ToArray());
            bytes += type switch { GgmlType.F32 => 4 * t.numel(), GgmlType.Q8_0 => t.numel() / 32 * 34, _ => 2 * t.numel() };
        }
        return bytes;
    }

    /// <summary>llama.cpp's gpt2 graph requires every bias; a built-in model trained without some gets zeros (the same function).</summary>
    private static void AddZeroBiases(GgufArchitecture arch, DecoderSpec s, Dictionary<string, Tensor> p)
    {
        if (arch is not Gpt2Family) return;
        for (int i = 0; i < s.NLayer; i++)
            foreach (var layer in new[] { "qkv", "out", "up", "down" })
                if (!p.ContainsKey($"layers.{i}.{layer}.bias")) p[$"layers.{i}.{layer}.bias"] = zeros(p[$"layers.{i}.{layer}.weight"].shape[0]);
    }

    /// <summary>
    /// convert_hf_to_gguf.py's choice: 1-D tensors, norms and the position table stay F32; other weights take the out
    /// type; a Q8_0 tensor whose rows are not whole 32-value blocks falls back to F16.
    /// </summary>
    private static GgmlType TypeOf(string name, Tensor t, GgufOutType outType)
    {
        if (t.dim() <= 1 || name.EndsWith("_norm.weight", StringComparison.Ordinal) || name.StartsWith("position_embd", StringComparison.Ordinal)) return GgmlType.F32;
        var type = outType switch { GgufOutType.F32 => GgmlType.F32, GgufOutType.F16 => GgmlType.F16, GgufOutType.Bf16 => GgmlType.BF16, _ => GgmlType.Q8_0 };
        return GgmlEncoding.Fits(type, t.shape[^1]) ? type : GgmlType.F16;
    }
}
