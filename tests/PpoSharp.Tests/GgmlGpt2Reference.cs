using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// GPT-2's forward pass written out from a PpoSharp decoder's state dict, in fp64, with a choice of GELU: the tanh
/// approximation as transformers' <c>gelu_new</c> computes it, or as ggml's CPU backend computes it. ggml (the llama.cpp
/// inside LLamaSharp 0.30.0, ggml/src/ggml-cpu/vec.h with <c>GGML_GELU_FP16</c> defined) never evaluates the formula on an
/// f32 activation: it rounds x to fp16, reads <c>table[fp16 bits]</c>, and widens the entry back to f32, where
/// <c>table[i] = fp16(gelu_f32(fp32(i)))</c> was filled once with f32 arithmetic and libm's tanhf; x ≤ -10 gives 0 and
/// x ≥ 10 gives x. That rounds both the input and the output of every GELU to fp16 (11 significant bits).
/// </summary>
internal sealed class GgmlGpt2Reference(IDictionary<string, Tensor> stateDict, int heads, double eps)
{
    private readonly Dictionary<string, Tensor> _p = stateDict.ToDictionary(p => p.Key, p => p.Value.detach().to(ScalarType.Float64));

    /// <summary>
    /// A GELU input (layer, flat index over position × MLP width) within 32 f32 ulps of an fp16 rounding midpoint: llama.cpp's
    /// f32 matrix products differ from these fp64 ones by a few ulps, so it may round to <paramref name="Other"/> instead.
    /// </summary>
    public sealed record Tie(int Layer, int Index, ushort Other);

    private static readonly Lazy<float[]> Table = new(() =>
    {
        var t = new float[1 << 16];
        for (int i = 0; i < t.Length; i++) t[i] = (float)(Half)GeluF32((float)BitConverter.UInt16BitsToHalf((ushort)i));
        return t;
    });

    /// <summary>ggml_gelu_f32: 0.5·x·(1 + tanhf(√(2/π)·x·(1 + 0.044715·x²))), in f32, the inner 1 + a·x·x fused as GCC compiles it.</summary>
    private static float GeluF32(float x) =>
        0.5f * x * (1.0f + MathF.Tanh(0.79788456080286535587989211986876f * x * MathF.FusedMultiplyAdd(0.044715f * x, x, 1.0f)));

    /// <summary>The MLP width of <paramref name="layer"/>: a <see cref="Tie"/>'s index divided by it is the position.</summary>
    public long Width(int layer) => _p[$"layers.{layer}.up.weight"].shape[0];

    /// <summary>
    /// Logits (B, T, V) in fp64 of one sequence, or only those of the token ids <paramref name="vocab"/>; with
    /// <paramref name="ggml"/> the GELU is ggml's table, computed once per variant: variant b rounds the ties in
    /// <paramref name="variants"/>[b] the other way (default: one variant, none flipped). The ties of the unflipped
    /// computation are added to <paramref name="ties"/>.
    /// </summary>
    public Tensor Logits(int[] ids, bool ggml, IReadOnlyList<IReadOnlySet<Tie>>? variants = null, List<Tie>? ties = null, Tensor? vocab = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        variants ??= [new HashSet<Tie>()];
        long b = variants.Count, t = ids.Length, c = _p["embed.weight"].shape[1], hd = c / heads;
        var idx = tensor(ids.Select(i => (long)i).ToArray());
        var x = (_p["embed.weight"].index_select(0, idx) + _p["pos_embed.weight"].narrow(0, 0, t)).expand(b, t, c);   // (B, T, C)
        var future = ones(t, t, dtype: ScalarType.Bool).triu(1);                                         // (T, T) keys after the query
        for (int layer = 0; _p.ContainsKey($"layers.{layer}.qkv.weight"); layer++)
        {
            Tensor P(string name) => _p[$"layers.{layer}.{name}"];
            var h = nn.functional.layer_norm(x, [c], P("attn_norm.weight"), P("attn_norm.bias"), eps);    // (B, T, C)
            var qkv = nn.functional.linear(h, P("qkv.weight"), P("qkv.bias")).view(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4);   // (3, B, H, T, hd)
            var scores = qkv[0].matmul(qkv[1].transpose(2, 3)) / Math.Sqrt(hd);                         // (B, H, T, T)
            var y = scores.masked_fill(future, double.NegativeInfinity).softmax(-1).matmul(qkv[2]);      // (B, H, T, hd)
            x = x + nn.functional.linear(y.transpose(1, 2).reshape(b, t, c), P("out.weight"), P("out.bias"));
            h = nn.functional.layer_norm(x, [c], P("mlp_norm.weight"), P("mlp_norm.bias"), eps);
            var up = nn.functional.linear(h, P("up.weight"), P("up.bias"));                              // (B, T, F)
            var act = ggml ? GgmlGelu(up, layer, variants, ties) : 0.5 * up * (1 + tanh(Math.Sqrt(2 / Math.PI) * (up + 0.044715 * up.pow(3))));
            x = x + nn.functional.linear(act, P("down.weight"), P("down.bias"));
        }
        x = nn.functional.layer_norm(x, [c], _p["norm.weight"], _p["norm.bias"], eps);
        var head = vocab is null ? _p["embed.weight"] : _p["embed.weight"].index_select(0, vocab);       // (V, C)
        return nn.functional.linear(x, head).MoveToOuterDisposeScope();                                 // (B, T, V)
    }

    /// <summary>ggml's table GELU on x (B, T, F), variant b taking the other side of the ties in variants[b].</summary>
    private static Tensor GgmlGelu(Tensor x, int layer, IReadOnlyList<IReadOnlySet<Tie>> variants, List<Tie>? ties)
    {
        var v = x.contiguous().data<double>().ToArray();
        int n = (int)(v.Length / variants.Count);
        var y = new double[v.Length];
        for (int i = 0; i < v.Length; i++)
        {
            float f = (float)v[i];
            if (f <= -10f || f >= 10f) { y[i] = f <= -10f ? 0 : f; continue; }
            ushort bits = BitConverter.HalfToUInt16Bits((Half)f);
            if (OtherSide(v[i], bits) is { } other)
            {
                var tie = new Tie(layer, i % n, other);
                if (i < n && variants[0].Count == 0) ties?.Add(tie);
                if (variants[i / n].Contains(tie)) bits = other;
            }
            y[i] = Table.Value[bits];
        }
        return tensor(y, x.shape, ScalarType.Float64);
    }

    /// <summary>The fp16 on the other side of the nearest rounding midpoint, where <paramref name="x"/> is within 32 f32 ulps of it.</summary>
    private static ushort? OtherSide(double x, ushort bits)
    {
        double h = (double)BitConverter.UInt16BitsToHalf(bits);
        float a = MathF.Abs((float)x);
        foreach (var neighbour in new[] { (ushort)(bits + 1), (ushort)(bits - 1) })
        {
            double n = (double)BitConverter.UInt16BitsToHalf(neighbour);
            if (double.IsNaN(n) || double.IsInfinity(n) || Math.Sign(n) * Math.Sign(h) < 0) continue;
            if (Math.Abs(x - (h + n) / 2) < 32 * (MathF.BitIncrement(a) - a)) return neighbour;
        }
        return null;
    }
}
