using static TorchSharp.torch;

namespace PpoSharp.Models;

/// <summary>
/// Keys and values of every layer for incremental decoding, preallocated to the full length and written in place
/// (no concatenation per step). <see cref="Length"/> is the number of positions already stored.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly Tensor[] _keys, _values;   // per layer (B, H, Tmax, hd)

    public KvCache(GptConfig config, long batch, long maxLength, ScalarType dtype, Device device)
    {
        _keys = new Tensor[config.NLayer];
        _values = new Tensor[config.NLayer];
        for (int i = 0; i < config.NLayer; i++)
        {
            _keys[i] = zeros([batch, config.NHead, maxLength, config.HeadDim], dtype, device);
            _values[i] = zeros([batch, config.NHead, maxLength, config.HeadDim], dtype, device);
        }
    }

    public int Length { get; private set; }
    public long Capacity => _keys[0].shape[2];

    /// <summary>Stores k, v (B, H, T, hd) after the current length; returns views of all stored (B, H, Length+T, hd).</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (Length + t > Capacity) throw new InvalidOperationException($"KV cache full: {Length} + {t} > {Capacity}");
        _keys[layer].narrow(2, Length, t).copy_(k);
        _values[layer].narrow(2, Length, t).copy_(v);
        return (_keys[layer].narrow(2, 0, Length + t), _values[layer].narrow(2, 0, Length + t));
    }

    /// <summary>Called once per forward, after every layer has appended <paramref name="t"/> positions.</summary>
    public void Advance(int t) => Length += t;

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values)) t.Dispose();
    }
}
