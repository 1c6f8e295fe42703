using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The decode-step matrix product against libtorch's linear, and the cases it must leave to libtorch.</summary>
public class SmallMatmulTests
{
    [Theory]
    [InlineData(1, 8, 4, false, 1)]       // one row, K below the single-row sum's 32 columns
    [InlineData(3, 16, 7, true, 1)]       // rows one at a time
    [InlineData(4, 64, 33, true, 1)]      // K a multiple of 32
    [InlineData(7, 24, 12, false, 1)]     // rows one at a time, up to the block of eight
    [InlineData(8, 72, 1030, true, 3)]    // the most rows (one 8-row block), the weight rows split over three threads
    [InlineData(5, 40, 9, true, 2)]       // K not a multiple of 32 (the single-row sum's 8-column tail); two threads
    [InlineData(1, 576, 49152, false, 2)] // SmolLM2's LM head at batch 1 over two threads (values about 24 in size: fp32 sums in another order differ by 3e-5)
    public void Forward_EqualsLinear(int rows, int k, int n, bool bias, int parts)
    {
        using var _ = no_grad();
        manual_seed(rows * 1000 + n);
        var x = randn(rows, 1, k);                                              // (M, 1, K): a decode step's shape
        var w = randn(n, k);                                                    // (N, K)
        var b = bias ? randn(n) : null;
        var expected = nn.functional.linear(x, w, b);                           // (M, 1, N)
        SmallMatmul.Parts = parts;
        try
        {
            Assert.True(SmallMatmul.Applies(x, w));
            var y = SmallMatmul.Forward(x, w, b);
            Assert.Equal(expected.shape, y.shape);
            Assert.True(y.allclose(expected, rtol: 1e-5, atol: 1e-4), $"max difference {(y - expected).abs().max().item<float>()}");
        }
        finally { SmallMatmul.Parts = 1; }
    }

    [Theory]
    [InlineData(1, 576, 1030, true, 2)]
    [InlineData(8, 64, 9, false, 1)]
    public void Forward_Bf16_EqualsLinearInFp32OfTheSameValues_RoundedToBf16(int rows, int k, int n, bool bias, int parts)
    {
        using var _ = no_grad();
        manual_seed(rows + n);
        var x = randn(rows, 1, k).to(ScalarType.BFloat16);
        var w = randn(n, k).to(ScalarType.BFloat16);
        var b = bias ? randn(n).to(ScalarType.BFloat16) : null;
        var expected = nn.functional.linear(x.to(ScalarType.Float32), w.to(ScalarType.Float32), b?.to(ScalarType.Float32));   // (M, 1, N) in fp32
        SmallMatmul.Parts = parts;
        try
        {
            var y = SmallMatmul.Forward(x, w, b);
            Assert.Equal(ScalarType.BFloat16, y.dtype);
            var gap = (y.to(ScalarType.Float32) - expected).abs();
            Assert.True(gap.le(expected.abs() * (1.0 / 128) + 1e-3).all().item<bool>(), $"max gap {gap.max().item<float>()}");   // bf16's half ulp (2^-8), and fp32 sums' order
        }
        finally { SmallMatmul.Parts = 1; }
    }

    [Fact]
    public void Forward_ReadsAStridedInput()
    {
        using var _ = no_grad();
        var x = randn(8, 2).t();                                                // (2, 8), not contiguous
        var w = randn(5, 8);
        Assert.True(SmallMatmul.Forward(x, w, null).allclose(nn.functional.linear(x, w), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Applies_LeavesTrainingLongInputsAndOtherShapesToLibtorch()
    {
        var w = randn(4, 16);
        using (no_grad())
        {
            Assert.True(SmallMatmul.Applies(randn(8, 16), w));
            Assert.False(SmallMatmul.Applies(randn(9, 16), w));                                       // more rows than a decode step
            Assert.False(SmallMatmul.Applies(randn(2, 12), randn(4, 12)));                             // K not a multiple of 8
            Assert.True(SmallMatmul.Applies(randn(2, 16).to(ScalarType.BFloat16), w.to(ScalarType.BFloat16)));
            Assert.False(SmallMatmul.Applies(randn(2, 16), w.to(ScalarType.BFloat16)));                  // mixed dtypes
            Assert.False(SmallMatmul.Applies(randn(2, 16), randn(16, 4).t()));                         // a transposed weight
        }
        Assert.False(SmallMatmul.Applies(randn(2, 16), w));                                            // autograd on
    }
}
