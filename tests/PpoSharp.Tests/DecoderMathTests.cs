using PpoSharp.Models;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>The decoder's new formulas on small hand-computed numbers: RoPE frequencies (plain and Llama 3.1 scaling), the rotation, RMSNorm.</summary>
public class DecoderMathTests
{
    private static DecoderSpec Rope(RopeScaling? scaling = null) =>
        new DecoderSpec(10, 64, 1, 1, 8) { Positions = PositionKind.Rope, RopeTheta = 1e6, RopeScaling = scaling };

    [Fact]
    public void InverseFrequencies_Plain_AreThetaToTheMinusTwoJOverD()
    {
        // head_dim 8, theta 1e6: 1e6^(-0/8), 1e6^(-2/8), 1e6^(-4/8), 1e6^(-6/8)
        var f = Models.Rope.InverseFrequencies(Rope());
        Assert.Equal([1.0, 0.0316228, 0.001, 3.16228e-5], f.Select(x => (double)x), new Tolerance(1e-7));
    }

    [Fact]
    public void InverseFrequencies_Llama3Scaling_KeepsShortWavelengths_DividesLongOnes_InterpolatesBetween()
    {
        // factor 8, low 1, high 4, original 8192: wavelengths 2 pi / f = 6.3, 198.7 (< 2048: kept), 6283 (between 2048 and
        // 8192: s = (8192 / 6283.2 - 1) / 3 = 0.10127, (1 - s) f / 8 + s f = 2.13608e-4), 198692 (> 8192: f / 8 = 3.95285e-6)
        var f = Models.Rope.InverseFrequencies(Rope(new RopeScaling(8, true, 1, 4, 8192)));
        Assert.Equal(1.0, f[0], 6);
        Assert.Equal(0.0316228, f[1], 6);
        Assert.Equal(2.13608e-4, f[2], 8);
        Assert.Equal(3.95285e-6, f[3], 10);
        Assert.Equal(1e-3 / 8, Models.Rope.InverseFrequencies(Rope(new RopeScaling(8)))[2], 9);     // linear: every frequency / 8
    }

    [Fact]
    public void Apply_RotatesHalvesByPositionTimesFrequency()
    {
        // x = (1, 0 | 0, 1), frequencies (1, 0.01), position 1: rotate_half(x) = (0, -1 | 1, 0),
        // x cos + rotate_half(x) sin = (cos 1, -sin 0.01, sin 1, cos 0.01)
        var x = tensor(new float[] { 1, 0, 0, 1 }).view(1, 1, 1, 4);                               // (B, T, heads, hd)
        var tables = Models.Rope.Tables(tensor(new long[] { 1 }).view(1, 1), tensor(new float[] { 1f, 0.01f }), ScalarType.Float32);
        var y = Models.Rope.Apply(x, tables).data<float>().ToArray();
        Assert.Equal([Math.Cos(1), -Math.Sin(0.01), Math.Sin(1), Math.Cos(0.01)], y.Select(v => (double)v), new Tolerance(1e-6));
    }

    [Fact]
    public void RmsNorm_DividesByRootMeanSquare_ThenScales()
    {
        // x = (1, 2, 3, 4): mean square 7.5, root 2.738613; weight (1, 1, 2, 2): (0.365148, 0.730297, 2.190890, 2.921187)
        var norm = new Norm(NormKind.RmsNorm, 4, 1e-12);
        using (no_grad()) norm.parameters().Single().copy_(tensor(new float[] { 1, 1, 2, 2 }));
        var y = norm.forward(tensor(new float[] { 1, 2, 3, 4 }).view(1, 4)).data<float>().ToArray();
        Assert.Equal([0.365148, 0.730297, 2.190890, 2.921187], y.Select(v => (double)v), new Tolerance(1e-5));
    }

    private sealed class Tolerance(double eps) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= eps;
        public int GetHashCode(double d) => 0;
    }
}
