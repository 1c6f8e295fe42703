using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// Keys and values of every layer for incremental decoding, preallocated to the full length and written in place
/// (no concatenation per step). <see cref="Length"/> is the number of positions already stored.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _kv;   // per layer (2, B, H, Tmax, hd): keys, then values

    public KvCache(GptConfig config, long batch, long maxLength, ScalarType dtype, Device device) =>
        _kv = Enumerable.Range(0, config.NLayer).Select(_ => zeros([2, batch, config.NHead, maxLength, config.HeadDim], dtype, device)).ToArray();

    public int Length { get; private set; }
    public long Capacity => _kv[0].shape[3];

    /// <summary>Stores keys and values kv (2, B, H, T, hd) after the current length; returns a view of all stored (2, B, H, Length+T, hd).</summary>
    public Tensor Append(int layer, Tensor kv)
    {
        long t = kv.shape[3];
        if (Length + t > Capacity) throw new InvalidOperationException($"KV cache full: {Length} + {t} > {Capacity}");
        _kv[layer].narrow(3, Length, t).copy_(kv);
        return _kv[layer].narrow(3, 0, Length + t);
    }

    /// <summary>Called once per forward, after every layer has appended <paramref name="t"/> positions.</summary>
    public void Advance(int t) => Length += t;

    public void Dispose()
    {
        foreach (var t in _kv) t.Dispose();
    }
}
