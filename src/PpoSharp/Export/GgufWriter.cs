using System.Text;

namespace PpoSharp.Export;

/// <summary>ggml's tensor types that the exporter writes (the numbers are ggml's <c>ggml_type</c>).</summary>
public enum GgmlType
{
    F32 = 0,
    F16 = 1,
    /// <summary>Blocks of 32 values: one fp16 scale d = max|x| / 127, then 32 int8 q = round(x / d) (34 bytes a block).</summary>
    Q8_0 = 8,
    BF16 = 30,
}

/// <summary>
/// A GGUF version 3 file, the format of llama.cpp (ggml's docs/gguf.md, gguf-py's gguf_writer.py): the magic "GGUF",
/// the version, the tensor and key-value counts, the key-value metadata, one info record per tensor (name, dims in
/// ggml's order -- fastest-varying first, the reverse of torch's shape --, type, offset), padding to
/// <see cref="Alignment"/>, then each tensor's data, each padded to the alignment. Little-endian throughout.
/// </summary>
public sealed class GgufWriter
{
    /// <summary>GGUF's default <c>general.alignment</c> in bytes.</summary>
    public const int Alignment = 32;

    // gguf_type: the value types of the metadata
    private const uint TypeUInt32 = 4, TypeInt32 = 5, TypeFloat32 = 6, TypeBool = 7, TypeString = 8, TypeArray = 9;

    private readonly List<(string Key, Action<BinaryWriter> Write)> _metadata = [];
    private readonly List<(string Name, long[] Shape, GgmlType Type, byte[] Data)> _tensors = [];

    public void Add(string key, string value) => _metadata.Add((key, w => { w.Write(TypeString); WriteString(w, value); }));
    public void Add(string key, uint value) => _metadata.Add((key, w => { w.Write(TypeUInt32); w.Write(value); }));
    public void Add(string key, float value) => _metadata.Add((key, w => { w.Write(TypeFloat32); w.Write(value); }));
    public void Add(string key, bool value) => _metadata.Add((key, w => { w.Write(TypeBool); w.Write(value); }));

    public void Add(string key, IReadOnlyList<string> values) => AddArray(key, TypeString, values.Count, w => { foreach (var v in values) WriteString(w, v); });
    public void Add(string key, IReadOnlyList<int> values) => AddArray(key, TypeInt32, values.Count, w => { foreach (var v in values) w.Write(v); });
    public void Add(string key, IReadOnlyList<float> values) => AddArray(key, TypeFloat32, values.Count, w => { foreach (var v in values) w.Write(v); });

    private void AddArray(string key, uint type, int count, Action<BinaryWriter> items) =>
        _metadata.Add((key, w => { w.Write(TypeArray); w.Write(type); w.Write((ulong)count); items(w); }));

    /// <summary>Adds a tensor of torch shape <paramref name="shape"/> (row-major, last dimension contiguous) stored as <paramref name="type"/>.</summary>
    public void AddTensor(string name, long[] shape, GgmlType type, float[] values) => _tensors.Add((name, shape, type, GgmlEncoding.Encode(values, type, shape[^1])));

    public IEnumerable<string> TensorNames => _tensors.Select(t => t.Name);

    /// <summary>Writes the whole file to <paramref name="stream"/>.</summary>
    public void Write(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write("GGUF"u8);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, write) in _metadata) { WriteString(w, key); write(w); }
        ulong offset = 0;
        foreach (var (name, shape, type, data) in _tensors)
        {
            WriteString(w, name);
            w.Write((uint)shape.Length);
            foreach (var d in shape.Reverse()) w.Write((ulong)d);      // ggml's ne[0] is the contiguous dimension
            w.Write((uint)type);
            w.Write(offset);
            offset += Padded((ulong)data.Length);
        }
        Pad(w);
        foreach (var (_, _, _, data) in _tensors) { w.Write(data); Pad(w); }
    }

    private static ulong Padded(ulong n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w)
    {
        w.Flush();
        long pos = w.BaseStream.Position;
        w.Write(new byte[(int)((ulong)pos % Alignment == 0 ? 0 : Alignment - (ulong)pos % Alignment)]);
    }

    /// <summary>A GGUF string: its UTF-8 byte length as a u64, then the bytes (no terminator).</summary>
    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
