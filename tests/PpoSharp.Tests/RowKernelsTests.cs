using PpoSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The decode-step RMSNorm and rotation against libtorch's ops (the path taken with autograd on), and the cases left to libtorch.</summary>
public class RowKernelsTests
{
    [Theory]
    [InlineData(1, 1, 576, ScalarType.Float32)]
    [InlineData(4, 2, 64, ScalarType.Float32)]
    [InlineData(1, 1, 576, ScalarType.BFloat16)]
    [InlineData(8, 1, 40, ScalarType.BFloat16)]
    public void RmsNorm_EqualsTheTorchPath(int batch, int positions, int c, ScalarType dtype)
    {
        manual_seed(c + batch);
        using var norm = new Norm(NormKind.RmsNorm, c, 1e-5);
        using (no_grad()) norm.parameters().First().copy_(rand(c) + 0.5);
        norm.to(dtype);
        var x = (randn(batch, positions, c) * 3).to(dtype);
        Tensor expected;
        using (enable_grad()) expected = norm.forward(x);                                // libtorch's ops
        using var _ = no_grad();
        Assert.True(RowKernels.Applies(x, norm.parameters().First()));
        var y = norm.forward(x);
        Assert.Equal(expected.shape, y.shape);
        Assert.Equal(dtype, y.dtype);
        // fp32: the mean's sum in another order (1e-6). bf16: that can move a rounding by one step, 2^-8 of the value.
        double relative = dtype == ScalarType.Float32 ? 1e-6 : 1.0 / 128;
        var gap = (y.to(ScalarType.Float32) - expected.to(ScalarType.Float32)).abs();
        Assert.True(gap.le(expected.to(ScalarType.Float32).abs() * relative + 1e-6).all().item<bool>(), $"max gap {gap.max().item<float>()}");
        if (dtype == ScalarType.BFloat16)                                                    // and one step is rare: most values are equal
            Assert.True(y.eq(expected).to(ScalarType.Float32).mean().item<float>() > 0.95);
    }

    [Theory]
    [InlineData(1, 1, 9, 3, 64, ScalarType.Float32)]
    [InlineData(3, 2, 4, 2, 8, ScalarType.Float32)]
    [InlineData(1, 1, 9, 3, 64, ScalarType.BFloat16)]
    [InlineData(8, 1, 2, 1, 16, ScalarType.BFloat16)]
    public void Rotate_EqualsRopeApply_Exactly_AndLeavesTheValueHeads(int batch, int positions, int heads, int kvHeads, int hd, ScalarType dtype)
    {
        manual_seed(batch * 100 + hd);
        var all = randn(batch, positions, heads + 2 * kvHeads, hd).to(dtype);               // (B, T, H+2KV, hd): q, k, v heads
        var invFreq = 1.0f / pow(tensor(10000f), arange(0, hd, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / hd);
        var table = Rope.Tables(arange(5, 5 + positions).unsqueeze(0).expand(batch, positions), invFreq, dtype);   // (B, T, 1, hd) x2
        var expected = Rope.Apply(all.narrow(2, 0, heads + kvHeads), table);               // libtorch's ops
        var values = all.narrow(2, heads + kvHeads, kvHeads).clone();
        using var _ = no_grad();
        Assert.True(RowKernels.Applies(all, table.Cos));
        RowKernels.Rotate(all, heads + kvHeads, table);
        Assert.True(all.narrow(2, 0, heads + kvHeads).equal(expected).all().item<bool>(), "each product and sum rounds where libtorch's does");
        Assert.True(all.narrow(2, heads + kvHeads, kvHeads).equal(values).all().item<bool>());
    }

    [Theory]
    [InlineData(ScalarType.Float32, 1, 1)]
    [InlineData(ScalarType.BFloat16, 2, 3)]
    public void KvCache_AppendRows_StoresWhatAppendStores(ScalarType dtype, int batch, int positions)
    {
        // Llama-style heads: 6 query heads, 2 key/value heads of size 8; two appends, the second after one position.
        var spec = new DecoderSpec(VocabSize: 10, ContextLength: 16, NLayer: 1, NHead: 6, DModel: 48) { KvHeads = 2 };
        using var plain = new KvCache(spec, batch, 8, dtype, CPU);
        using var rows = new KvCache(spec, batch, 8, dtype, CPU);
        using var _ = no_grad();
        foreach (var t in new[] { 1, positions })
        {
            var heads = randn(batch, t, 6 + 2 * 2, 8).to(dtype);                                // (B, T, H+2KV, hd)
            var expected = plain.Append(0, heads.narrow(2, 6, 2).transpose(1, 2), heads.narrow(2, 8, 2).transpose(1, 2));
            var stored = rows.AppendRows(0, heads, 6);
            Assert.Equal(expected.shape, stored.shape);
            Assert.True(stored.equal(expected).all().item<bool>());
            plain.Advance(t);
            rows.Advance(t);
        }
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public unsafe void Add_AndSiluTimes_EqualLibtorchsOps(ScalarType dtype)
    {
        manual_seed(5);
        bool bf16 = dtype == ScalarType.BFloat16;
        var (a, b) = ((randn(3, 40) * 3).to(dtype), (randn(3, 40) * 3).to(dtype));
        var sum = empty_like(a);
        RowKernels.Add(RowKernels.Address(a), RowKernels.Address(b), RowKernels.Address(sum), 120, bf16);
        Assert.True(sum.equal(a + b).all().item<bool>());                                                  // one rounding, as libtorch's add
        var (gate, up) = ((randn(3, 48) * 4).to(dtype), randn(3, 48).to(dtype));
        var expected = nn.functional.silu(gate) * up;                                      // (3, 48), rounded after each op in bf16
        var product = gate.clone();
        RowKernels.SiluTimes(RowKernels.Address(product), RowKernels.Address(up), 144, bf16);
        var gap = (product.to(ScalarType.Float32) - expected.to(ScalarType.Float32)).abs();
        // Another exponential than libtorch's (an ulp in fp32); in bf16 that can move a rounding by one step, rarely.
        double relative = bf16 ? 1.0 / 128 : 1e-6;
        Assert.True(gap.le(expected.to(ScalarType.Float32).abs() * relative + 1e-7).all().item<bool>(), $"max gap {gap.max().item<float>()}");
        if (bf16) Assert.True(product.eq(expected).to(ScalarType.Float32).mean().item<float>() > 0.95);
        Assert.Throws<ArgumentException>(() => RowKernels.SiluTimes(RowKernels.Address(product), RowKernels.Address(up), 7, bf16));
    }

    [Fact]
    public void Applies_OnlyToAFewRows_WithoutAutograd_InOneDtype()
    {
        var w = ones(16);
        using (no_grad())
        {
            Assert.True(RowKernels.Applies(zeros(8, 1, 16), w));
            Assert.False(RowKernels.Applies(zeros(3, 3, 16), w));                        // 9 rows: a prefill, libtorch's
            Assert.False(RowKernels.Applies(zeros(1, 1, 16).to(ScalarType.BFloat16), w));   // dtypes differ
            Assert.False(RowKernels.Applies(zeros(1, 1, 16, 2).transpose(2, 3), w));     // not contiguous
            Assert.False(RowKernels.Applies(zeros(1, 1, 16).to(ScalarType.Float64), w.to(ScalarType.Float64)));
        }
        Assert.False(RowKernels.Applies(zeros(1, 1, 16), w));                            // autograd on: training's path
    }
}
