using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Models.Hf;

/// <summary>One tensor of a safetensors header: its dtype name, shape and byte range within the data section.</summary>
public sealed record SafetensorsEntry(string Name, string Dtype, long[] Shape, long Begin, long End);

/// <summary>
/// The safetensors format, read and written here without pickle or Python: an 8-byte little-endian header length N,
/// N bytes of JSON (<c>{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}</c>, padded
/// with spaces to a multiple of 8), then the tensors' bytes, little-endian, in C order, offsets relative to the data.
/// A Hugging Face model folder holds one <c>model.safetensors</c>, or an index and the shards it names.
/// </summary>
public static partial class Safetensors
{
    public const string SingleFile = "model.safetensors", IndexFile = "model.safetensors.index.json";
    /// <summary>"2GB" as transformers' <c>save_pretrained(max_shard_size="2GB")</c> counts it (decimal).</summary>
    public const long DefaultMaxShardBytes = 2_000_000_000;
    private const long MaxHeaderBytes = 100L << 20, ChunkBytes = 1L << 30;
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Every dtype name of the format: its size in bits and the TorchSharp type that holds it (null: none).</summary>
    private static readonly Dictionary<string, (int Bits, ScalarType? Type)> Dtypes = new()
    {
        ["F64"] = (64, ScalarType.Float64), ["F32"] = (32, ScalarType.Float32), ["F16"] = (16, ScalarType.Float16),
        ["BF16"] = (16, ScalarType.BFloat16), ["I64"] = (64, ScalarType.Int64), ["I32"] = (32, ScalarType.Int32),
        ["I16"] = (16, ScalarType.Int16), ["I8"] = (8, ScalarType.Int8), ["U8"] = (8, ScalarType.Byte),
        ["BOOL"] = (8, ScalarType.Bool), ["C64"] = (64, ScalarType.ComplexFloat32),
        ["U64"] = (64, null), ["U32"] = (32, null), ["U16"] = (16, null), ["F8_E4M3"] = (8, null), ["F8_E5M2"] = (8, null),
        ["F8_E8M0"] = (8, null), ["F6_E2M3"] = (6, null), ["F6_E3M2"] = (6, null), ["F4"] = (4, null),
    };

    /// <summary>
    /// The validated header of one file, in data order: length within 100 MB and the file, valid JSON, known dtypes,
    /// each byte range the size of shape x item size, none overlapping, all within the data section.
    /// </summary>
    public static IReadOnlyList<SafetensorsEntry> ReadHeader(string path) => ReadHeader(path, out _);

    /// <summary>The header's <c>__metadata__</c> (string to string; empty when there is none) of a valid file.</summary>
    public static Dictionary<string, string> ReadMetadata(string path)
    {
        ReadHeader(path);                                                           // validates the file first
        using var f = SafeFile.Open(path);
        Span<byte> head = stackalloc byte[8];
        f.ReadExactly(head);
        var header = new byte[BinaryPrimitives.ReadUInt64LittleEndian(head)];
        f.ReadExactly(header);
        using var doc = JsonDocument.Parse(header);
        if (!doc.RootElement.TryGetProperty("__metadata__", out var meta) || meta.ValueKind != JsonValueKind.Object) return [];
        return meta.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.String).ToDictionary(p => p.Name, p => p.Value.GetString()!);
    }

    /// <summary>Every tensor of one file, in its stored dtype and with its exact bits (no float conversion).</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        var file = SafetensorsFolder.OpenFile(path);
        return Collect(into => { foreach (var name in file.Names) into.Add(name, file.Read(name)); });
    }

    /// <summary>
    /// The weights of a Hugging Face model folder: <c>model.safetensors</c>, else <c>model.safetensors.index.json</c>
    /// and the shards its <c>weight_map</c> names. Pickle checkpoints (<c>*.bin</c>, <c>*.pt</c>, ...) are refused.
    /// </summary>
    public static Dictionary<string, Tensor> LoadFolder(string dir)
    {
        var folder = SafetensorsFolder.Open(dir);
        return Collect(into => { foreach (var name in folder.Names) into.Add(name, folder.Read(name)); });
    }

    /// <summary>
    /// The dtype of a model folder's first stored tensor as transformers names it (float32, bfloat16, float16; other names
    /// as safetensors spells them), for configs that do not say; reads headers only.
    /// </summary>
    public static string FirstDtype(string dir)
    {
        var single = Path.Combine(dir, SingleFile);
        var file = SafeFile.Present(single) ? single
            : SafeFile.Present(Path.Combine(dir, IndexFile)) ? Path.Combine(dir, ReadWeightMap(Path.Combine(dir, IndexFile)).Values.Order(StringComparer.Ordinal).First())
            : null;
        var dtype = file is null ? null : ReadHeader(file).FirstOrDefault()?.Dtype;
        return dtype switch { "F32" => "float32", "BF16" => "bfloat16", "F16" => "float16", null => "float32", _ => dtype };
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> in the given order and their own dtypes, with <c>"__metadata__": {"format": "pt"}</c>,
    /// atomically: <c>path.tmp</c> is written, flushed to disk and renamed.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = Header(path, list, metadata);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.WriteStream(path, f =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            f.Write(length);
            f.Write(header);
            foreach (var (_, tensor) in list)
            {
                using var scope = NewDisposeScope();
                InChunks(tensor.detach().cpu().contiguous(), bytes => f.Write(bytes));
            }
        });
    }

    /// <summary>
    /// Writes a folder as transformers' <c>save_pretrained</c> does: one <c>model.safetensors</c> when the tensors fit in
    /// <paramref name="maxShardBytes"/>, else <c>model-0000i-of-0000N.safetensors</c> (in the given order; a new shard
    /// starts when the next tensor would exceed the limit) and <c>model.safetensors.index.json</c>. Weight files of an
    /// earlier save that this one does not rewrite are removed first.
    /// </summary>
    public static void SaveFolder(string dir, IEnumerable<KeyValuePair<string, Tensor>> tensors, long maxShardBytes = DefaultMaxShardBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var shards = Shard(tensors, maxShardBytes);
        List<string> files = shards.Count == 1 ? [SingleFile] : [.. shards.Select((_, i) => $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors"), IndexFile];
        Directory.CreateDirectory(dir);
        foreach (var stale in Directory.GetFiles(dir).Where(f => WeightFile().IsMatch(Path.GetFileName(f)) && !files.Contains(Path.GetFileName(f))))
            File.Delete(stale);
        for (int i = 0; i < shards.Count; i++) Save(Path.Combine(dir, files[i]), shards[i]);
        if (shards.Count > 1) WriteIndex(Path.Combine(dir, IndexFile), shards, files);
    }

    internal static List<SafetensorsEntry> ReadHeader(string path, out long dataStart)
    {
        if (!SafeFile.Present(path)) throw Fail(path, "file not found");
        using var f = SafeFile.Open(path);
        if (f.Length < 8) throw Fail(path, $"not a safetensors file ({f.Length} bytes, shorter than the 8-byte header length)");
        Span<byte> head = stackalloc byte[8];
        f.ReadExactly(head);
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(head);
        if (length > MaxHeaderBytes) throw Fail(path, $"not a safetensors file (header length {length} exceeds the {MaxHeaderBytes >> 20} MB limit)");
        if ((long)length > f.Length - 8)
            throw Fail(path, $"truncated or not a safetensors file (header length {length} is beyond the file, which holds {f.Length - 8} bytes after it)");
        var header = new byte[length];
        f.ReadExactly(header);
        dataStart = 8 + (long)length;
        return CheckLayout(path, ParseHeader(path, header), f.Length - dataStart);
    }

    private static List<SafetensorsEntry> ParseHeader(string path, byte[] header)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw Fail(path, $"header is not valid JSON ({e.Message.Split(". ")[0]})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Fail(path, "header is not a JSON object");
            var seen = new HashSet<string>();
            return [.. doc.RootElement.EnumerateObject().Where(p => p.Name != "__metadata__")
                .Select(p => seen.Add(p.Name) ? ParseEntry(path, p) : throw Fail(path, $"tensor '{p.Name}' appears twice in the header"))];
        }
    }

    private static SafetensorsEntry ParseEntry(string path, JsonProperty p)
    {
        try
        {
            var dtype = p.Value.GetProperty("dtype").GetString() ?? throw new FormatException();
            long[] shape = [.. p.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64() >= 0 ? d.GetInt64() : throw new FormatException())];
            long[] offsets = [.. p.Value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64())];
            if (offsets.Length != 2 || offsets[0] < 0) throw new FormatException();
            if (!Dtypes.TryGetValue(dtype, out var type)) throw Fail(path, $"tensor '{p.Name}' has unknown dtype '{dtype}'");
            double bytes = shape.Aggregate(1.0, (n, d) => n * d) * type.Bits / 8;
            if (offsets[1] - offsets[0] != bytes)
                throw Fail(path, $"tensor '{p.Name}': data_offsets [{offsets[0]}, {offsets[1]}] hold {offsets[1] - offsets[0]} bytes, but {dtype} [{string.Join(", ", shape)}] takes {bytes}");
            return new SafetensorsEntry(p.Name, dtype, shape, offsets[0], offsets[1]);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw Fail(path, $"tensor '{p.Name}': header entry is not {{\"dtype\": name, \"shape\": [sizes], \"data_offsets\": [begin, end]}}");
        }
    }

    private static List<SafetensorsEntry> CheckLayout(string path, List<SafetensorsEntry> entries, long dataBytes)
    {
        long end = entries.Select(e => e.End).DefaultIfEmpty(0).Max();
        if (end > dataBytes) throw Fail(path, $"truncated (the header describes {end} bytes of tensor data, the file holds {dataBytes})");
        var ordered = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        for (int i = 1; i < ordered.Count; i++)
            if (ordered[i].Begin < ordered[i - 1].End)
                throw Fail(path, $"tensors '{ordered[i - 1].Name}' and '{ordered[i].Name}' overlap in the data section");
        return ordered;
    }

    /// <summary>Reads one tensor of a file whose header gave <paramref name="e"/>, in its stored dtype.</summary>
    internal static Tensor ReadTensor(string path, long dataStart, SafetensorsEntry e)
    {
        if (Dtypes[e.Dtype].Type is not { } type) throw Fail(path, $"tensor '{e.Name}' is {e.Dtype}, which TorchSharp cannot hold (convert it to BF16 or F32)");
        using var f = SafeFile.Open(path);
        var tensor = empty(e.Shape, type);
        try
        {
            f.Position = dataStart + e.Begin;
            InChunks(tensor, bytes => f.ReadExactly(bytes));
            return tensor;
        }
        catch (EndOfStreamException) { tensor.Dispose(); throw Fail(path, $"truncated while reading tensor '{e.Name}'"); }
        catch { tensor.Dispose(); throw; }
    }

    /// <summary>Whether a header dtype is a floating-point one TorchSharp holds (a weight's).</summary>
    internal static bool IsFloat(string dtype) => dtype is "F32" or "BF16" or "F16" or "F64";

    internal static ScalarType? TorchType(string dtype) => Dtypes[dtype].Type;

    internal static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(SafeFile.ReadBytes(indexPath, SafeFile.IndexMax));
            return doc.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name,
                p => p.Value.GetString() is { Length: > 0 } file && Path.GetFileName(file) == file ? file : throw new FormatException());
        }
        catch (JsonException e) { throw Fail(indexPath, $"not valid JSON ({e.Message.Split(". ")[0]})"); }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw Fail(indexPath, "not a safetensors index (expects {\"weight_map\": {tensor name: shard file in this folder}})");
        }
    }

    private static byte[] Header(string path, List<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var meta = new JsonObject { ["format"] = "pt" };
        foreach (var (key, value) in metadata ?? new Dictionary<string, string>()) meta[key] = value;
        var root = new JsonObject { ["__metadata__"] = meta };
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            if (root.ContainsKey(name)) throw Fail(path, $"tensor name '{name}' is given twice or reserved");
            var dtype = Dtypes.FirstOrDefault(d => d.Value.Type == tensor.dtype).Key
                ?? throw Fail(path, $"tensor '{name}' is {tensor.dtype}, which safetensors cannot store");
            var shape = new JsonArray([.. tensor.shape.Select(d => (JsonNode?)d)]);
            long end = offset + ByteSize(tensor);
            root[name] = new JsonObject { ["dtype"] = dtype, ["shape"] = shape, ["data_offsets"] = new JsonArray(offset, end) };
            offset = end;
        }
        var json = Encoding.UTF8.GetBytes(root.ToJsonString());
        return [.. json, .. Enumerable.Repeat((byte)' ', (8 - json.Length % 8) % 8)];
    }

    /// <summary><c>{"metadata": {"total_size": bytes}, "weight_map": {name: shard}}</c>, sorted by name as transformers writes it.</summary>
    private static void WriteIndex(string path, List<List<KeyValuePair<string, Tensor>>> shards, List<string> files)
    {
        var map = shards.SelectMany((shard, i) => shard.Select(t => KeyValuePair.Create(t.Key, (JsonNode?)files[i])));
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = shards.Sum(shard => shard.Sum(t => ByteSize(t.Value))) },
            ["weight_map"] = new JsonObject(map.OrderBy(t => t.Key, StringComparer.Ordinal)),
        };
        var json = Encoding.UTF8.GetBytes(index.ToJsonString(Indented) + "\n");
        AtomicFile.WriteStream(path, f => f.Write(json));
    }

    /// <summary>Tensors grouped into shards in the given order; one larger than the limit is alone in its shard.</summary>
    private static List<List<KeyValuePair<string, Tensor>>> Shard(IEnumerable<KeyValuePair<string, Tensor>> tensors, long maxShardBytes)
    {
        List<List<KeyValuePair<string, Tensor>>> shards = [[]];
        long size = 0;
        foreach (var t in tensors)
        {
            if (shards[^1].Count > 0 && size + ByteSize(t.Value) > maxShardBytes)
            {
                shards.Add([]);
                size = 0;
            }
            shards[^1].Add(t);
            size += ByteSize(t.Value);
        }
        return shards;
    }

    private static long ByteSize(Tensor t) => t.numel() * t.ElementSize;

    /// <summary>Hands the bytes of a contiguous CPU tensor to <paramref name="io"/> in pieces of at most 1 GiB (a span's length is an int).</summary>
    private static void InChunks(Tensor tensor, Action<Span<byte>> io)
    {
        using var flat = tensor.view(-1);
        long step = ChunkBytes / tensor.ElementSize, count = flat.shape[0];
        for (long i = 0; i < count; i += step)
        {
            using var part = flat.narrow(0, i, Math.Min(step, count - i));
            io(part.bytes);
        }
    }

    /// <summary>The tensors that <paramref name="fill"/> adds; if it fails, those already added are disposed.</summary>
    private static Dictionary<string, Tensor> Collect(Action<Dictionary<string, Tensor>> fill)
    {
        var result = new Dictionary<string, Tensor>();
        try { fill(result); }
        catch { foreach (var t in result.Values) t.Dispose(); throw; }
        return result;
    }

    internal static PpoSharpException Fail(string path, string problem) => new($"{path}: {problem}");

    /// <summary>The files <see cref="SaveFolder"/> writes (and removes when a later save does not rewrite them).</summary>
    [GeneratedRegex(@"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")]
    private static partial Regex WeightFile();
}
