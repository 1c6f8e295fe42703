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
        if (Length + t > Capacity) throw new InvalidOperationException($"KV cache full: {Length} + {t} > {Capacity}");
        _kv[layer][0].narrow(2, Length, t).copy_(keys);
        _kv[layer][1].narrow(2, Length, t).copy_(values);
        return _kv[layer].narrow(3, 0, Length + t);
    }

    /// <summary>Called once per forward, after every layer has appended <paramref name="t"/> positions.</summary>
    public void Advance(int t) => Length += t;

    public void Dispose()
    {
        foreach (var t in _kv) t.Dispose();
    }
}
