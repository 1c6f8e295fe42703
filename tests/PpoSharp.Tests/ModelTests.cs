using PpoSharp.Models;
using PpoSharp.Text;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

public class ModelTests
{
    private static readonly SpecialTokenIds Special = RoleTokenIds.FromFirst(15).Special;   // ids 15..19 of a 20-token vocabulary

    private static (Tensor Ids, Tensor Mask) Prompts(params int[][] rows) => Sampling.LeftPad(rows, Special.Pad);

    [Fact]
    public void Hidden_ExposesLastLayerStates_WithModelWidth()
    {
        var model = TestSupport.TinyModel();
        var h = model.Hidden(tensor(new long[] { 1, 2, 3 }, [1, 3]));
        Assert.Equal(new long[] { 1, 3, 16 }, h.shape);
        Assert.True(model.Logits(h).allclose(model.forward(tensor(new long[] { 1, 2, 3 }, [1, 3]))));
    }

    [Fact]
    public void Generate_GreedyWithCache_EqualsUncachedRecomputation()
    {
        var model = TestSupport.TinyModel(seed: 3);
        var (ids, mask) = Prompts([1, 2, 3, 4, 5], [6, 7], [8, 9, 10]);
        var o = new SamplingOptions(MaxNewTokens: 12, Greedy: true);
        using var cached = Sampling.Generate(model, ids, mask, o, Special, useCache: true);
        using var uncached = Sampling.Generate(model, ids, mask, o, Special, useCache: false);
        Assert.Equal(uncached.Responses.data<long>().ToArray(), cached.Responses.data<long>().ToArray());
        Assert.Equal(new long[] { 3, 12 }, cached.Responses.shape);
    }

    [Theory]
    [InlineData(true)]       // left-padded rows: decode steps use the key mask
    [InlineData(false)]      // no pads: decode steps run without a mask
    public void Generate_SampledWithCache_EqualsUncachedForSameSeed(bool padded)
    {
        var model = TestSupport.TinyModel(seed: 4);
        var (ids, mask) = padded ? Prompts([1, 2, 3], [4]) : Prompts([1, 2, 3], [4, 5, 6]);
        var o = new SamplingOptions(MaxNewTokens: 10, Temperature: 1.5);
        using var a = Sampling.Generate(model, ids, mask, o, Special, new Generator(7), useCache: true);
        using var b = Sampling.Generate(model, ids, mask, o, Special, new Generator(7), useCache: false);
        Assert.Equal(b.Responses.data<long>().ToArray(), a.Responses.data<long>().ToArray());
    }

    [Fact]
    public void Generate_SplitOverWorkers_MatchesOneWorkerGreedy_AndEachShareDrawsItsOwnStream()
    {
        var model = TestSupport.TinyModel(seed: 9);
        var rows = Enumerable.Range(0, 16).Select(i => (IReadOnlyList<int>)Enumerable.Range(1, 1 + i % 5).ToArray()).ToList();  // 1 to 5 tokens: padded
        var (ids, mask) = Sampling.LeftPad(rows, Special.Pad);
        var greedy = new SamplingOptions(MaxNewTokens: 12, Greedy: true);
        using var one = Sampling.Generate(model, ids, mask, greedy, Special, workers: 1);
        using var two = Sampling.Generate(model, ids, mask, greedy, Special, workers: 2);
        Assert.Equal(one.Responses.data<long>().ToArray(), two.Responses.data<long>().ToArray());
        Assert.Equal(one.Mask.data<bool>().ToArray(), two.Mask.data<bool>().ToArray());

        var (same, sameMask) = Sampling.LeftPad(Enumerable.Repeat((IReadOnlyList<int>)[3, 1, 4], 16).ToList(), Special.Pad);
        var hot = new SamplingOptions(MaxNewTokens: 12, Temperature: 2.0);
        using var a = Sampling.Generate(model, same, sameMask, hot, Special, workers: 2, new Generator(5));
        using var b = Sampling.Generate(model, same, sameMask, hot, Special, workers: 2, new Generator(5));
        Assert.Equal(a.Responses.data<long>().ToArray(), b.Responses.data<long>().ToArray());
        Assert.False(a.Responses.narrow(0, 0, 8).equal(a.Responses.narrow(0, 8, 8)).all().item<bool>());     // the two shares' samples differ
    }

    [Theory]
    [InlineData(8, 1, false)]     // a single key
    [InlineData(8, 13, true)]     // one block of eight keys and five more; some keys masked
    [InlineData(24, 8, false)]    // a head size below the 64-column block
    [InlineData(96, 21, true)]    // a 64-column block and 32 columns more
    public void DecodeAttention_EqualsSdpa(int hd, int length, bool masked)
    {
        using var _ = no_grad();
        manual_seed(hd + length);
        long b = 3, h = 2;
        var q = randn([b, 1, 3, h, hd]).permute(2, 0, 3, 1, 4)[0];                          // (B, H, 1, hd), strided like the model's
        var kv = randn([2, b, h, length + 5, hd]).narrow(3, 0, length);                   // (2, B, H, L, hd), a view of a longer cache
        Tensor? mask = null;
        if (masked)
        {
            var keep = rand(b, length).gt(0.4).index_fill(1, tensor(length - 1L), true);     // (B, L); a query always sees itself
            mask = zeros(b, 1, 1, length).masked_fill(keep.logical_not().view(b, 1, 1, length), double.NegativeInfinity);
        }
        var expected = nn.functional.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask: mask);   // (B, H, 1, hd)
        Assert.True(DecodeAttention.Forward(q, kv, mask).allclose(expected, rtol: 1e-4, atol: 1e-5));
    }

    [Theory]
    [InlineData(64, 48, false)]   // SmolLM2's head size, a short cache
    [InlineData(24, 13, true)]
    public void DecodeAttention_Bf16_EqualsSdpaInFp32OfTheSameValues_RoundedToBf16(int hd, int length, bool masked)
    {
        using var _ = no_grad();
        manual_seed(hd * length);
        long b = 2, h = 3;
        var q = randn([b, 1, 3, h, hd]).permute(2, 0, 3, 1, 4)[0].to(ScalarType.BFloat16);   // (B, H, 1, hd), strided
        var kv = randn([2, b, h, length + 5, hd]).to(ScalarType.BFloat16).narrow(3, 0, length);   // (2, B, H, L, hd), a view
        Tensor? mask = null;
        if (masked)
        {
            var keep = rand(b, length).gt(0.4).index_fill(1, tensor(length - 1L), true);
            mask = zeros(b, 1, 1, length).masked_fill(keep.logical_not().view(b, 1, 1, length), double.NegativeInfinity).to(ScalarType.BFloat16);
        }
        var expected = nn.functional.scaled_dot_product_attention(q.to(ScalarType.Float32), kv[0].to(ScalarType.Float32), kv[1].to(ScalarType.Float32),
            attn_mask: mask?.to(ScalarType.Float32));                                          // (B, H, 1, hd) in fp32
        var y = DecodeAttention.Forward(q, kv, mask);
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        var gap = (y.to(ScalarType.Float32) - expected).abs();
        Assert.True(gap.le(expected.abs() * (1.0 / 128) + 1e-4).all().item<bool>(), $"max gap {gap.max().item<float>()}");   // bf16's half ulp
    }

    [Fact]
    public void Hidden_InCachedChunks_EqualsOneForward()
    {
        var model = TestSupport.TinyModel(seed: 13);
        var ids = tensor(new long[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, [2, 6]);
        using var _ = no_grad();
        using var cache = new KvCache(model.Config, 2, 6, ScalarType.Float32, CPU);
        var first = model.Hidden(ids.narrow(1, 0, 2), cache: cache);              // (2, 2, C), causal from position 0
        var rest = model.Hidden(ids.narrow(1, 2, 4), cache: cache);               // (2, 4, C), 4 queries after 2 cached keys
        var whole = model.Hidden(ids);                                           // (2, 6, C)
        Assert.True(whole.narrow(1, 0, 2).allclose(first, rtol: 1e-4, atol: 1e-5));
        Assert.True(whole.narrow(1, 2, 4).allclose(rest, rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void NextToken_SamplesTheSoftmaxDistribution_AndNeverARemovedToken()
    {
        var probs = new[] { 0.05, 0.15, 0.3, 0.5 };
        var logits = tensor(probs.Select(p => (float)Math.Log(p)).ToArray(), [1, 4]).expand(40000, 4);   // (N, 4)
        var drawn = Sampling.NextToken(logits, new SamplingOptions(), new Generator(3)).bincount(null, 4).to(ScalarType.Float64) / 40000;
        for (int i = 0; i < 4; i++) Assert.InRange(drawn[i].item<double>(), probs[i] - 0.01, probs[i] + 0.01);   // 4 sigma at most

        var top2 = Sampling.NextToken(logits, new SamplingOptions(TopK: 2), new Generator(3)).bincount(null, 4).to(ScalarType.Float64) / 40000;
        Assert.Equal(0.0, top2[0].item<double>() + top2[1].item<double>());
        Assert.InRange(top2[2].item<double>(), 0.375 - 0.01, 0.375 + 0.01);     // 0.3 / (0.3 + 0.5)
    }

    [Fact]
    public void LeftPadding_DoesNotChangeRowLogits()
    {
        var model = TestSupport.TinyModel(seed: 5);
        var row = new[] { 3, 1, 4, 1, 5 };
        var (alone, aloneMask) = Prompts(row);
        var (batch, batchMask) = Prompts([2, 7, 1, 8, 2, 8, 1, 8], row);          // row gets 3 pads on the left
        var h1 = model.Logits(model.Hidden(alone, Sampling.PositionIds(aloneMask), aloneMask));       // (1, 5, V)
        var h2 = model.Logits(model.Hidden(batch, Sampling.PositionIds(batchMask), batchMask));       // (2, 8, V)
        Assert.True(h1[0].allclose(h2[1].narrow(0, 3, 5), rtol: 1e-4, atol: 1e-5));
        Assert.False(h2.isnan().any().item<bool>());
    }

    [Fact]
    public void LeftPadding_DoesNotChangeSamples()
    {
        var model = TestSupport.TinyModel(seed: 6);
        var o = new SamplingOptions(MaxNewTokens: 10, Temperature: 1.3);
        var (alone, aloneMask) = Prompts([3, 1, 4]);
        var padded = tensor(new long[] { Special.Pad, Special.Pad, 3, 1, 4 }, [1, 5]);
        var paddedMask = tensor(new[] { false, false, true, true, true }, [1, 5]);
        using var a = Sampling.Generate(model, alone, aloneMask, o, Special, new Generator(11));
        using var b = Sampling.Generate(model, padded, paddedMask, o, Special, new Generator(11));
        Assert.Equal(a.Responses.data<long>().ToArray(), b.Responses.data<long>().ToArray());
    }

    [Fact]
    public void Generate_FixedSeed_GivesIdenticalSamples_OtherSeedDiffers()
    {
        var model = TestSupport.TinyModel(seed: 8);
        var (ids, mask) = Prompts([1, 2], [3, 4], [5, 6], [7, 8]);
        var o = new SamplingOptions(MaxNewTokens: 16, Temperature: 2.0);
        long[] Sample(ulong seed)
        {
            using var g = Sampling.Generate(model, ids, mask, o, Special, new Generator(seed));
            return g.Responses.data<long>().ToArray();
        }
        Assert.Equal(Sample(42), Sample(42));
        Assert.NotEqual(Sample(42), Sample(43));
    }

    /// <summary>Makes every hidden state the unit vector e_0 (final LayerNorm gain 0, bias e_0) and the LM head pick <paramref name="favourite"/>.</summary>
    private static void ForceArgMax(Decoder model, int favourite)
    {
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name == "norm.weight") p.zero_();
            if (name == "norm.bias") { p.zero_(); p[0] = 1; }
            if (name == "lm_head.weight") { p.zero_(); p[favourite, 0] = 1; }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]      // both shares stop at once: the outputs are trimmed to one column
    public void Generate_EosChosen_StopsAfterOneTokenWithEosInMask(int workers)
    {
        var model = TestSupport.TinyModel(seed: 9);
        ForceArgMax(model, Special.Eos[0]);
        var (ids, mask) = Prompts([1, 2, 3], [4], [5, 6], [7]);
        using var g = Sampling.Generate(model, ids, mask, new SamplingOptions(MaxNewTokens: 8, Greedy: true), Special, workers);
        Assert.Equal(new long[] { 4, 1 }, g.Responses.shape);
        Assert.Equal(Enumerable.Repeat((long)Special.Eos[0], 4), g.Responses.data<long>().ToArray());
        Assert.All(g.Mask.data<bool>().ToArray(), Assert.True);
    }

    [Fact]
    public void Generate_EosNeverChosen_RunsToMaxNewTokens()
    {
        var model = TestSupport.TinyModel(seed: 9);
        ForceArgMax(model, 5);
        var (ids, mask) = Prompts([1, 2, 3]);
        using var g = Sampling.Generate(model, ids, mask, new SamplingOptions(MaxNewTokens: 7, Greedy: true), Special);
        Assert.Equal(Enumerable.Repeat(5L, 7), g.Responses.data<long>().ToArray());
        Assert.All(g.Mask.data<bool>().ToArray(), Assert.True);
    }

    [Fact]
    public void Generate_CapsNewTokensAtContextLength()
    {
        var model = TestSupport.TinyModel(seed: 9, context: 8);
        ForceArgMax(model, 5);
        var (ids, mask) = Prompts([1, 2, 3]);
        using var g = Sampling.Generate(model, ids, mask, new SamplingOptions(MaxNewTokens: 50, Greedy: true), Special);
        Assert.Equal(5, g.Responses.shape[1]);
    }

    [Fact]
    public void ProcessLogits_TopK_KeepsKLargest()
    {
        var logits = tensor(new float[] { 1, 5, 3, 4, 2 }, [1, 5]);
        var kept = Sampling.ProcessLogits(logits, new SamplingOptions(TopK: 2)).isfinite().data<bool>().ToArray();
        Assert.Equal(new[] { false, true, false, true, false }, kept);
    }

    [Fact]
    public void ProcessLogits_TopP_KeepsSmallestSetReachingP()
    {
        // probabilities 0.5, 0.3, 0.15, 0.05: with p = 0.7 the set {0.5, 0.3} is the smallest whose mass reaches p.
        var logits = tensor(new[] { 0.5f, 0.3f, 0.15f, 0.05f }, [1, 4]).log();
        var kept = Sampling.ProcessLogits(logits, new SamplingOptions(TopP: 0.7)).isfinite().data<bool>().ToArray();
        Assert.Equal(new[] { true, true, false, false }, kept);
    }

    [Fact]
    public void ProcessLogits_Temperature_DividesLogits()
    {
        var logits = tensor(new float[] { 2, 4 }, [1, 2]);
        Assert.Equal(new float[] { 1, 2 }, Sampling.ProcessLogits(logits, new SamplingOptions(Temperature: 2)).data<float>().ToArray());
    }

    [Fact]
    public void PositionIds_LeftPadded_StartAtFirstRealToken()
    {
        var mask = tensor(new[] { false, false, true, true, true, true }, [2, 3]);
        Assert.Equal(new long[] { 0, 0, 0, 0, 1, 2 }, Sampling.PositionIds(mask).data<long>().ToArray());
    }

    [Fact]
    public void GptConfig_HeadsNotDividingWidth_IsRejected()
    {
        var e = Assert.Throws<PpoSharpException>(() => new DecoderSpec(10, DModel: 10, NHead: 3).Validate());
        Assert.Contains("n_head", e.Message);
    }
}
