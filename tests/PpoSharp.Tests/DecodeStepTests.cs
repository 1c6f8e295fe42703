using PpoSharp.Models;
using PpoSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// A Llama-style block's fused decode step against the same kernels run block by block and against libtorch's ops
/// (the path taken with autograd on), and the cases it leaves to those paths.
/// </summary>
public class DecodeStepTests
{
    private static DecoderSpec Spec(bool bias, int d = 32, int heads = 4, int kvHeads = 2, bool qkNorm = false) => new(64, 32, 2, heads, d)
    {
        KvHeads = kvHeads, Intermediate = 48, Norm = NormKind.RmsNorm, Positions = PositionKind.Rope, RopeTheta = 10000, Mlp = MlpKind.SwiGlu,
        QkvBias = bias, OutBias = bias, MlpBias = bias, TiedHead = true, QkNorm = qkNorm,
    };

    [Theory]
    [InlineData(ScalarType.Float32, false, 1, false, 32, 4, 2, 1)]        // batch 1, no mask
    [InlineData(ScalarType.Float32, true, 3, true, 32, 4, 2, 1)]          // a left-padded row, biases
    [InlineData(ScalarType.Float32, false, 8, true, 128, 2, 1, 2)]        // 8 rows, head size 64, products split over two threads
    [InlineData(ScalarType.BFloat16, false, 1, false, 32, 4, 2, 1)]
    [InlineData(ScalarType.BFloat16, true, 3, true, 32, 4, 2, 1)]
    [InlineData(ScalarType.BFloat16, false, 8, true, 128, 2, 1, 2)]
    public void FusedStep_EqualsTheBlockByBlockKernels_AndLibtorchsOps(ScalarType dtype, bool bias, int batch, bool padded, int d, int heads, int kvHeads, int parts)
    {
        manual_seed(batch + d + (bias ? 10 : 0));
        using var model = RandomModel(Spec(bias, d, heads, kvHeads), dtype);
        var ids = randint(0, 64, [batch, 5]);
        var mask = ones(batch, 5, ScalarType.Bool);
        if (padded) mask[1, ..2] = false;                                              // a left-padded row: the step's mask is read
        Tensor expected, blockByBlock, fused;
        using (enable_grad()) expected = OneThread(() => Decode(model, ids, mask));     // libtorch's ops
        long before = DecoderBlock.StepsOnThisThread;
        SmallMatmul.Parts = parts;
        try
        {
            using var _ = no_grad();
            DecoderBlock.Unfused = true;
            blockByBlock = OneThread(() => Decode(model, ids, mask));
            DecoderBlock.Unfused = false;
            fused = OneThread(() => Decode(model, ids, mask));
        }
        finally { (SmallMatmul.Parts, DecoderBlock.Unfused) = (1, false); }
        Assert.Equal(2 * 3, DecoderBlock.StepsOnThisThread - before);                   // 2 layers x 3 steps, each fused
        // The same kernels and roundings: only SiLU's exponential differs (a vector exp against libtorch's Sleef), by an
        // ulp (gaps of 3e-7 of the largest value in fp32, none in bf16 here).
        AssertClose(blockByBlock, fused, dtype == ScalarType.Float32 ? 1e-6 : 1.0 / 256);
        // libtorch: sums in other orders (1e-6 of the largest value in fp32); in bf16 a rounding step (2^-8) moves and
        // carries through the step's ops (1% seen).
        AssertClose(expected, fused, dtype == ScalarType.Float32 ? 1e-5 : 0.02);
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void FusedStep_WithALoraView_EqualsTheBlockByBlockKernels_AndLibtorchsOps(ScalarType dtype)
    {
        manual_seed(21);
        using var model = RandomModel(Spec(true), dtype);
        using var view = LoraModels.NewView(model, new LoraSettings(8, 16, 0, ""));            // every projection, q, k and v apart
        using (no_grad())
            foreach (var p in view.Adapter!.parameters()) p.copy_(randn_like(p) * 0.1);        // B is 0 as initialised: give it weight
        view.Adapter!.to(dtype);
        view.eval();
        var ids = randint(0, 64, [3, 5]);
        var mask = ones(3, 5, ScalarType.Bool);
        mask[2, ..3] = false;
        Tensor expected, blockByBlock, fused, plain;
        using (enable_grad()) expected = OneThread(() => Decode(view, ids, mask));
        long before = DecoderBlock.StepsOnThisThread;
        using (no_grad())
        {
            DecoderBlock.Unfused = true;
            try { blockByBlock = OneThread(() => Decode(view, ids, mask)); }
            finally { DecoderBlock.Unfused = false; }
            fused = OneThread(() => Decode(view, ids, mask));
            plain = OneThread(() => Decode(model, ids, mask));
        }
        Assert.Equal(2 * 2 * 3, DecoderBlock.StepsOnThisThread - before);                   // the view's steps and the base's
        Assert.True((fused - plain).abs().max().to(ScalarType.Float32).item<float>() > 0.1);   // the adapters count
        AssertClose(blockByBlock, fused, dtype == ScalarType.Float32 ? 1e-6 : 1.0 / 256);        // 3e-7 and none seen
        AssertClose(expected, fused, dtype == ScalarType.Float32 ? 1e-5 : 0.02);                 // 4e-7 and 1.3% seen
    }

    private static void AssertClose(Tensor expected, Tensor actual, double relative)
    {
        var gap = (actual.to(ScalarType.Float32) - expected.to(ScalarType.Float32)).abs().max().item<float>();
        float scale = expected.to(ScalarType.Float32).abs().max().item<float>();
        Assert.True(gap <= relative * scale, $"max gap {gap} of {scale}");
    }

    private static Decoder RandomModel(DecoderSpec spec, ScalarType dtype)
    {
        var model = new Decoder(spec);
        using (no_grad())
            foreach (var p in model.parameters()) p.copy_(randn_like(p) * 0.3 + (p.dim() == 1 ? 1 : 0));   // every weight distinct, norms near 1
        model.eval();
        model.to(dtype);
        return model;
    }

    private static T OneThread<T>(Func<T> run)
    {
        int threads = get_num_threads();
        set_num_threads(1);
        try { return run(); }
        finally { set_num_threads(threads); }
    }

    /// <summary>
    /// The final hidden states (B, 3, C) of three decode steps after prefilling ids (B, P) into a KV cache; the key mask
    /// goes to the model only where a row is padded, as generation passes it.
    /// </summary>
    private static Tensor Decode(Decoder model, Tensor ids, Tensor mask)
    {
        long b = ids.shape[0], p = ids.shape[1];
        bool padded = !mask.all().item<bool>();
        using var cache = new KvCache(model.Config, b, p + 3, model.Embeddings.dtype, CPU);
        var positions = Sampling.PositionIds(mask);
        model.Hidden(ids, positions, padded ? mask : null, cache);
        var keys = cat([mask, ones(b, 3, ScalarType.Bool)], 1);
        var next = positions.select(1, -1) + 1;
        var steps = new List<Tensor>();
        for (int s = 0; s < 3; s++)
        {
            var column = ((ids.select(1, s) * 7 + 3) % 64).view(b, 1);                  // (B, 1)
            steps.Add(model.Hidden(column, (next + s).view(b, 1), padded ? keys.narrow(1, 0, p + s + 1) : null, cache));
        }
        return cat(steps, 1);
    }

    [Fact]
    public void FusedStep_LeavesOtherBlocksNarrowOrDroppingLoraBf16ProductsAutogradAndTorchThreadsToTheBlockByBlockPath()
    {
        var ids = randint(0, 64, [1, 4]);
        var mask = ones(1, 4, ScalarType.Bool);
        long before = DecoderBlock.StepsOnThisThread;
        using (var gpt = new Decoder(new DecoderSpec(64, 32, 2, 4, 32)))                 // LayerNorm, GELU, learned positions
        using (var qkNorm = new Decoder(Spec(false, qkNorm: true)))                     // Qwen3's q/k norms
        using (var rms = new Decoder(Spec(false) with { Norm = NormKind.LayerNorm }))    // rotary positions, LayerNorm
        using (no_grad())
            foreach (var m in new[] { gpt, qkNorm, rms })
            {
                m.eval();
                OneThread(() => Decode(m, ids, mask));
            }
        using var llama = new Decoder(Spec(false));
        llama.eval();
        using var narrow = LoraModels.NewView(llama, new LoraSettings(4, 16, 0, ""));
        narrow.eval();
        using (no_grad()) OneThread(() => Decode(narrow, ids, mask));                    // a LoRA view of r 4 (not a multiple of 8)
        using var dropping = LoraModels.NewView(llama, new LoraSettings(8, 16, 0.1, ""));
        dropping.train();
        using (no_grad()) OneThread(() => Decode(dropping, ids, mask));                  // LoRA dropout at work
        llama.MatmulDtype = ScalarType.BFloat16;                                          // bf16 products of fp32 weights
        using (no_grad()) OneThread(() => Decode(llama, ids, mask));
        llama.MatmulDtype = null;
        using (enable_grad()) OneThread(() => Decode(llama, ids, mask));                 // autograd on
        using (no_grad()) Decode(llama, ids, mask);                                       // torch's threads for the step's ops (the machine's count)
        Assert.Equal(get_num_threads() == 1 ? 6 : 0, DecoderBlock.StepsOnThisThread - before);   // on one core the last one fuses
    }
}
