using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using PpoSharp.Models;
using PpoSharp.Text;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>What <c>config.json</c> of a run directory holds: the model kind, its shape and the training settings.</summary>
public sealed record RunConfig(string Kind, DecoderSpec Model, JsonNode? Training);

/// <summary>
/// A run directory: <c>config.json</c>, <c>model.safetensors</c>, <c>tokenizer.json</c>, <c>metrics.jsonl</c>.
/// Models are written atomically (temporary file, then rename) and loaded from safetensors only, with the header size
/// bounded and every tensor's name, dtype and shape checked against the config.
/// </summary>
public static class RunDirectory
{
    public const string ConfigFile = "config.json", ModelFile = "model.safetensors";
    public const string PolicyKind = "policy", RewardModelKind = "reward_model";
    private const long MaxHeaderBytes = 100L << 20;

    /// <summary>
    /// Creates <paramref name="dir"/>; refuses a non-empty one unless <paramref name="force"/> (start over: old metrics and
    /// checkpoints are removed) or <paramref name="resume"/> (continue it), so no run is overwritten by mistake.
    /// </summary>
    public static void PrepareOutput(string dir, bool force, bool resume = false)
    {
        CheckOutput(dir, force, resume);
        if (resume) return;
        Directory.CreateDirectory(dir);
        if (!force) return;
        File.Delete(Path.Combine(dir, MetricsWriter.FileName));
        if (Directory.Exists(Checkpoints.Root(dir))) Directory.Delete(Checkpoints.Root(dir), recursive: true);
    }

    /// <summary>The checks of <see cref="PrepareOutput"/> alone, writing nothing (commands run them before any work).</summary>
    public static void CheckOutput(string dir, bool force, bool resume)
    {
        if (resume && !Directory.Exists(dir)) throw new PpoSharpException($"{dir}: nothing to resume (directory not found)");
        if (!resume && !force && Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            throw new PpoSharpException($"{dir}: output directory is not empty (use --resume to continue it, --force to start over, or another --out)");
    }

    public static void Save(string dir, string kind, nn.Module model, DecoderSpec config, ITokenizer tokenizer, object training)
    {
        Directory.CreateDirectory(dir);
        var run = new RunConfig(kind, config, JsonSerializer.SerializeToNode(training, training.GetType(), Json.Options));
        WriteAtomically(Path.Combine(dir, ConfigFile), tmp => File.WriteAllText(tmp, JsonSerializer.Serialize(run, Json.Options)));
        tokenizer.Save(dir);
        SaveModule(Path.Combine(dir, ModelFile), model);
    }

    /// <summary>Writes a module's parameters to a safetensors file, atomically.</summary>
    public static void SaveModule(string path, nn.Module module) => WriteAtomically(path, tmp => module.save_safetensors(tmp));

    public static RunConfig ReadConfig(string dir)
    {
        if (!Directory.Exists(dir)) throw new PpoSharpException($"{dir}: model directory not found");
        var path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new PpoSharpException($"{path}: missing (not a PpoSharp run directory)");
        try
        {
            var run = JsonSerializer.Deserialize<RunConfig>(File.ReadAllText(path), Json.Options)
                ?? throw new PpoSharpException($"{path}: empty config");
            if (run.Model is null) throw new PpoSharpException($"{path}: missing key 'model'");
            run.Model.Validate();
            return run;
        }
        catch (JsonException e) { throw new PpoSharpException($"{path}: invalid config ({e.Message.Split(". ")[0]})"); }
        catch (PpoSharpException e) when (!e.Message.StartsWith(path, StringComparison.Ordinal)) { throw new PpoSharpException($"{path}: {e.Message}"); }
    }

    /// <summary>Loads the policy (GPT + LM head) and tokenizer of a run directory.</summary>
    public static (Decoder Model, ITokenizer Tokenizer) LoadPolicy(string dir)
    {
        var (run, tokenizer) = ReadChecked(dir, PolicyKind);
        var model = new Decoder(run.Model);
        LoadWeights(model, Path.Combine(dir, ModelFile));
        return (model, tokenizer);
    }

    /// <summary>Loads a reward model (backbone + head + offset) and its tokenizer.</summary>
    public static (RewardModel Model, ITokenizer Tokenizer) LoadRewardModel(string dir)
    {
        var (run, tokenizer) = ReadChecked(dir, RewardModelKind);
        var model = new RewardModel(new Decoder(run.Model));
        LoadWeights(model, Path.Combine(dir, ModelFile));
        model.eval();
        return (model, tokenizer);
    }

    private static (RunConfig Run, ITokenizer Tokenizer) ReadChecked(string dir, string kind)
    {
        var run = ReadConfig(dir);
        if (run.Kind != kind)
            throw new PpoSharpException($"{dir}: holds a {run.Kind.Replace('_', ' ')}, but a {kind.Replace('_', ' ')} is needed here");
        var tokenizer = Tokenizers.Load(dir);
        if (tokenizer.VocabSize != run.Model.VocabSize)
            throw new PpoSharpException($"{Path.Combine(dir, ConfigFile)}: vocab_size {run.Model.VocabSize} does not match the tokenizer's {tokenizer.VocabSize}");
        return (run, tokenizer);
    }

    /// <summary>Copies safetensors weights into <paramref name="model"/> after checking names, dtypes and shapes.</summary>
    public static void LoadWeights(nn.Module model, string path)
    {
        var loaded = ReadSafetensors(path);
        try
        {
            var expected = model.state_dict();
            foreach (var key in expected.Keys.Except(loaded.Keys))
                throw new PpoSharpException($"{path}: tensor '{key}' is missing");
            foreach (var key in loaded.Keys.Except(expected.Keys))
                throw new PpoSharpException($"{path}: unexpected tensor '{key}' (the file does not belong to this model's config)");
            using var _ = no_grad();
            foreach (var (key, target) in expected)
            {
                var source = loaded[key];
                if (source.dtype != target.dtype || !source.shape.SequenceEqual(target.shape))
                    throw new PpoSharpException($"{path}: tensor '{key}' is {source.dtype} [{string.Join(",", source.shape)}], the config expects {target.dtype} [{string.Join(",", target.shape)}]");
                target.copy_(source);
            }
        }
        finally
        {
            foreach (var t in loaded.Values) t.Dispose();
        }
    }

    private static Dictionary<string, Tensor> ReadSafetensors(string path)
    {
        if (!File.Exists(path)) throw new PpoSharpException($"{path}: model file not found");
        using (var f = File.OpenRead(path))
        {
            Span<byte> head = stackalloc byte[8];
            if (f.Read(head) != 8) throw new PpoSharpException($"{path}: not a safetensors file (shorter than its 8-byte header length)");
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(head);
            if (headerLength > MaxHeaderBytes || (long)headerLength > f.Length - 8)
                throw new PpoSharpException($"{path}: not a safetensors file (header length {headerLength} is out of bounds)");
            var header = new byte[headerLength];
            f.Position = 8;
            f.ReadExactly(header);
            long dataEnd;
            try
            {
                using var doc = JsonDocument.Parse(header);
                dataEnd = doc.RootElement.EnumerateObject().Where(p => p.Name != "__metadata__")
                    .Select(p => p.Value.GetProperty("data_offsets")[1].GetInt64()).DefaultIfEmpty(0).Max();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or IndexOutOfRangeException)
            {
                throw new PpoSharpException($"{path}: not a safetensors file (header is not valid safetensors JSON)");
            }
            long dataBytes = f.Length - 8 - (long)headerLength;
            if (dataEnd > dataBytes) throw new PpoSharpException($"{path}: truncated (the header describes {dataEnd} bytes of tensors, the file holds {dataBytes})");
        }
        try { return Safetensors.LoadStateDict(path); }
        catch (Exception e) when (e is not PpoSharpException) { throw new PpoSharpException($"{path}: corrupt safetensors file ({e.Message.Split('\n')[0]})"); }
    }

    private static void WriteAtomically(string path, Action<string> write)
    {
        var tmp = path + ".tmp";
        write(tmp);
        using (var f = new FileStream(tmp, FileMode.Open, FileAccess.Read)) f.Flush(flushToDisk: true);
        File.Move(tmp, path, overwrite: true);
    }
}
