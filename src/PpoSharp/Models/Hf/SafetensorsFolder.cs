using static TorchSharp.torch;

namespace PpoSharp.Models.Hf;

/// <summary>
/// The weights of a model folder (or of one safetensors file) known from their headers alone: which file holds each
/// tensor, its dtype, shape and byte range, every header validated and the index checked against the shards, before a
/// byte of tensor data is read. Tensors are then read one at a time (<see cref="Read"/>), so a caller can refuse a
/// folder from names and shapes without reading it, and holds at most one stored tensor besides the model while loading.
/// </summary>
public sealed class SafetensorsFolder
{
    private static readonly string[] PickleExtensions = [".bin", ".pt", ".pth", ".ckpt"];
    private readonly Dictionary<string, (string File, long DataStart, SafetensorsEntry Entry)> _tensors;

    private SafetensorsFolder(Dictionary<string, (string, long, SafetensorsEntry)> tensors) => _tensors = tensors;

    /// <summary>The tensor names, in file order.</summary>
    public IEnumerable<string> Names => _tensors.Keys;

    /// <summary>The header entry of a stored tensor.</summary>
    public SafetensorsEntry Entry(string name) => _tensors[name].Entry;

    /// <summary>The file that holds a stored tensor.</summary>
    public string FileOf(string name) => _tensors[name].File;

    /// <summary>Reads one tensor in its stored dtype, with its exact bits.</summary>
    public Tensor Read(string name)
    {
        var (file, start, entry) = _tensors[name];
        return Safetensors.ReadTensor(file, start, entry);
    }

    /// <summary>One safetensors file, header validated.</summary>
    public static SafetensorsFolder OpenFile(string path)
    {
        var entries = Safetensors.ReadHeader(path, out long start);
        return new(entries.ToDictionary(e => e.Name, e => (path, start, e)));
    }

    /// <summary>
    /// A Hugging Face model folder's weights: <c>model.safetensors</c>, else <c>model.safetensors.index.json</c> and the
    /// shards its <c>weight_map</c> names (each shard's header against the index). Pickle checkpoints are refused.
    /// </summary>
    public static SafetensorsFolder Open(string dir)
    {
        if (!Directory.Exists(dir)) throw Safetensors.Fail(dir, "model folder not found");
        var single = Path.Combine(dir, Safetensors.SingleFile);
        if (SafeFile.Present(single)) return OpenFile(single);
        var index = Path.Combine(dir, Safetensors.IndexFile);
        if (SafeFile.Present(index)) return OpenSharded(dir, index);
        var pickle = Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal)
            .FirstOrDefault(f => PickleExtensions.Contains(Path.GetExtension(f), StringComparer.OrdinalIgnoreCase));
        if (pickle is not null)
            throw Safetensors.Fail(pickle, "pickle weights are not loaded (they can run code); convert them with `python -c \"from transformers " +
                $"import AutoModelForCausalLM as M; M.from_pretrained('{dir}').save_pretrained('{dir}', safe_serialization=True)\"`");
        throw Safetensors.Fail(dir, $"no model weights ({Safetensors.SingleFile} or {Safetensors.IndexFile}) in this folder");
    }

    /// <summary>Checks the index against the shards' headers before any data is read.</summary>
    private static SafetensorsFolder OpenSharded(string dir, string indexPath)
    {
        var weightMap = Safetensors.ReadWeightMap(indexPath);
        var tensors = new Dictionary<string, (string, long, SafetensorsEntry)>();
        var owner = new Dictionary<string, string>();
        foreach (var shard in weightMap.Values.Distinct().Order(StringComparer.Ordinal))
        {
            var path = Path.Combine(dir, shard);
            if (!SafeFile.Present(path)) throw Safetensors.Fail(indexPath, $"shard '{shard}' named in the weight_map is missing");
            var entries = Safetensors.ReadHeader(path, out long start);
            foreach (var e in entries)
            {
                if (!owner.TryAdd(e.Name, shard)) throw Safetensors.Fail(path, $"tensor '{e.Name}' is also in {owner[e.Name]}");
                tensors[e.Name] = (path, start, e);
            }
        }
        foreach (var (name, shard) in weightMap.Where(t => owner.GetValueOrDefault(t.Key) != t.Value))
            throw Safetensors.Fail(Path.Combine(dir, shard), $"tensor '{name}' is absent, though {Safetensors.IndexFile} places it in this shard");
        return new(tensors);
    }
}
