using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// Keys and values of every layer for incremental decoding, preallocated to the full length and written in place
/// (no concatenation per step); with grouped-query attention it holds only the key/value heads.
/// <see cref="Length"/> is the number of positions already stored.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _kv;   // per layer (2, B, KV, Tmax, hd): keys, then values

    public KvCache(DecoderSpec spec, long batch, long maxLength, ScalarType dtype, Device device) =>
        _kv = Enumerable.Range(0, spec.NLayer).Select(_ => zeros([2, batch, spec.KvHeadCount, maxLength, spec.HeadDim], dtype, device)).ToArray();

    public int Length { get; private set; }

    public long Capacity => _kv[0].shape[3];

    /// <summary>Stores keys and values (B, KV, T, hd) after the current length; returns a view of all stored (2, B, KV, Length+T, hd).</summary>
    public Tensor Append(int layer, Tensor keys, Tensor values)
    {
        long t = keys.shape[2];
        CheckRoom(t);
        _kv[layer][0].narrow(2, Length, t).copy_(keys);
        _kv[layer][1].narrow(2, Length, t).copy_(values);
        return _kv[layer].narrow(3, 0, Length + t);
    }

    /// <summary>
    /// <see cref="Append"/> straight from a decode step's projection buffer heads (B, T, H+2KV, hd) (the keys after the
    /// <paramref name="queryHeads"/> query heads, then the values), one row of hd values at a time instead of four
    /// libtorch copies and views per layer; contiguous, in the cache's dtype, on the CPU (else it calls Append).
    /// </summary>
    public unsafe Tensor AppendRows(int layer, Tensor heads, int queryHeads)
    {
        var cache = _kv[layer];                                                                  // (2, B, KV, Tmax, hd)
        int kvHeads = (int)cache.size(2);
        if (!Holds(heads) || !heads.is_contiguous())
            return Append(layer, heads.narrow(2, queryHeads, kvHeads).transpose(1, 2), heads.narrow(2, queryHeads + kvHeads, kvHeads).transpose(1, 2));
        AppendRows(layer, RowKernels.Address(heads), heads.size(0), heads.size(1), queryHeads);
        return cache.narrow(3, 0, Length + heads.size(1));
    }

    /// <summary>
    /// <see cref="AppendRows(int, Tensor, int)"/> from raw memory: heads (B, T, H+2KV, hd) contiguous in the cache's dtype;
    /// returns where the layer's keys and values are, the new positions included.
    /// </summary>
    internal unsafe DecodeAttention.KvView AppendRows(int layer, byte* source, long b, long t, int queryHeads)
    {
        var cache = _kv[layer];                                                                  // (2, B, KV, Tmax, hd)
        if (b != cache.size(1)) throw new ArgumentException($"{b} rows for a KV cache of {cache.size(1)}");
        CheckRoom(t);
        int kvHeads = (int)cache.size(2), hd = (int)cache.size(4), nh = queryHeads + 2 * kvHeads, size = (int)cache.element_size();
        var view = new DecodeAttention.KvView(RowKernels.Address(cache), cache.stride(0), cache.stride(1), cache.stride(2), cache.stride(3), kvHeads, (int)(Length + t));
        for (long row = 0; row < b; row++)
            for (long pos = 0; pos < t; pos++)
                for (int part = 0; part < 2; part++)
                    for (int h = 0; h < kvHeads; h++)
                    {
                        long from = ((row * t + pos) * nh + queryHeads + part * kvHeads + h) * hd;   // heads[row, pos, H + part KV + h]
                        long to = part * view.Part + row * view.Row + h * view.Head + (Length + pos) * view.Pos;   // cache[part, row, h, Length + pos]
                        Buffer.MemoryCopy(source + from * size, view.Data + to * size, (long)hd * size, (long)hd * size);
                    }
        return view;
    }

    /// <summary>Whether this cache stores <paramref name="x"/>'s rows (B, ...): its batch, dtype, and the CPU.</summary>
    internal bool Holds(Tensor x) =>
        _kv[0].size(1) == x.size(0) && _kv[0].dtype == x.dtype && _kv[0].device_type == TorchSharp.DeviceType.CPU;

    private void CheckRoom(long t)
    {
        if (Length + t > Capacity) throw new InvalidOperationException($"KV cache full: {Length} + {t} > {Capacity}");
    }

    /// <summary>Called once per forward, after every layer has appended <paramref name="t"/> positions.</summary>
    public void Advance(int t) => Length += t;

    public void Dispose()
    {
        foreach (var t in _kv) t.Dispose();
    }
}
