using PpoSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>A Llama-style block's fused decode step against libtorch's ops (the path taken with autograd on), and the cases it leaves alone.</summary>
public class DecodeStepTests
{
    private static DecoderSpec Spec(bool bias) => new(64, 32, 2, 4, 32)
    {
        KvHeads = 2, Intermediate = 48, Norm = NormKind.RmsNorm, Positions = PositionKind.Rope, RopeTheta = 10000, Mlp = MlpKind.SwiGlu,
        QkvBias = bias, OutBias = bias, MlpBias = bias, TiedHead = true,
    };

    [Theory]
    [InlineData(ScalarType.Float32, false, 1)]
    [InlineData(ScalarType.Float32, true, 3)]
    [InlineData(ScalarType.BFloat16, false, 1)]
    [InlineData(ScalarType.BFloat16, true, 3)]
    public void FusedStep_EqualsLibtorchsOps_WithPaddedRows(ScalarType dtype, bool bias, int batch)
    {
        manual_seed(batch + (bias ? 10 : 0));
        using var model = new Decoder(Spec(bias));
        using (no_grad())
            foreach (var p in model.parameters()) p.copy_(randn_like(p) * 0.3 + (p.dim() == 1 ? 1 : 0));   // every weight distinct, norms near 1
        model.eval();
        model.to(dtype);
        var ids = randint(0, 64, [batch, 5]);
        var mask = ones(batch, 5, ScalarType.Bool);
        if (batch > 1) mask[1, ..2] = false;                                             // a left-padded row: the step's mask is used
        int threads = get_num_threads();
        set_num_threads(1);
        try
        {
            Tensor expected;
            using (enable_grad()) expected = Decode(model, ids, mask);                  // libtorch's ops
            long before = DecoderBlock.StepsOnThisThread;
            Tensor actual;
            using (no_grad()) actual = Decode(model, ids, mask);
            Assert.Equal(2 * 3, DecoderBlock.StepsOnThisThread - before);                // 2 layers x 3 steps, each fused
            var gap = (actual.to(ScalarType.Float32) - expected.to(ScalarType.Float32)).abs();
            // fp32: sums in another order (gaps of 1e-6 of the largest value). bf16: a rounding step (2^-8) moves and carries
            // through the step's ops (gaps of 1%).
            double tolerance = dtype == ScalarType.Float32 ? 1e-5 : 0.02;
            Assert.True(gap.max().item<float>() <= tolerance * expected.to(ScalarType.Float32).abs().max().item<float>(), $"max gap {gap.max().item<float>()}");
        }
        finally { set_num_threads(threads); }
    }

    /// <summary>The final hidden states (B, 3, C) of three decode steps after prefilling ids (B, P) with its mask into a KV cache.</summary>
    private static Tensor Decode(Decoder model, Tensor ids, Tensor mask)
    {
        long b = ids.shape[0], p = ids.shape[1];
        using var cache = new KvCache(model.Config, b, p + 3, model.Embeddings.dtype, CPU);
        var positions = Sampling.PositionIds(mask);
        model.Hidden(ids, positions, mask, cache);
        var keys = cat([mask, ones(b, 3, ScalarType.Bool)], 1);
        var next = positions.select(1, -1) + 1;
        var steps = new List<Tensor>();
        for (int s = 0; s < 3; s++)
        {
            var column = ((ids.select(1, s) * 7 + 3) % 64).view(b, 1);                  // (B, 1)
            steps.Add(model.Hidden(column, (next + s).view(b, 1), keys.narrow(1, 0, p + s + 1), cache));
        }
        return cat(steps, 1);
    }

    [Fact]
    public void FusedStep_LeavesLoraTrainingAndLayerNormModelsToTheBlockByBlockPath()
    {
        using var gpt = new Decoder(new DecoderSpec(64, 32, 2, 4, 32));                 // LayerNorm and GELU
        gpt.eval();
        int threads = get_num_threads();
        set_num_threads(1);
        try
        {
            var ids = randint(0, 64, [1, 4]);
            var mask = ones(1, 4, ScalarType.Bool);
            long before = DecoderBlock.StepsOnThisThread;
            using (no_grad()) Decode(gpt, ids, mask);
            using var llama = new Decoder(Spec(false));
            llama.eval();
            using (enable_grad()) Decode(llama, ids, mask);                              // autograd on
            set_num_threads(2);
            using (no_grad()) Decode(llama, ids, mask);                                  // torch's threads for the step's ops
            Assert.Equal(before, DecoderBlock.StepsOnThisThread);
        }
        finally { set_num_threads(threads); }
    }
}
