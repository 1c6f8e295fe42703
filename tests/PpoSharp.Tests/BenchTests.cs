using PpoSharp.Benchmarks;
using PpoSharp.Models;

namespace PpoSharp.Tests;

public class BenchTests
{
    [Fact]
    public void MatmulParameters_CountsBlocksAndHead_NotEmbeddingTables()
    {
        // d = 8, 1 layer, vocab 10: per block norms 2x(8+8), qkv 8*24+24, out 8*8+8, up 8*32+32, down 32*8+8;
        // final norm 16; lm_head 8*10.  = 32 + 216 + 72 + 288 + 264 + 16 + 80 = 968
        var model = new Decoder(new DecoderSpec(10, 4, 1, 2, 8));
        Assert.Equal(968, Bench.MatmulParameters(model));
        Assert.Equal(968 + 10 * 8 + 4 * 8, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void FlopsPerToken_FollowTheStatedFormulas()
    {
        var c = new DecoderSpec(512, 128, 4, 4, 256);
        Assert.Equal(6.0 * 1000 + 12.0 * 4 * 256 * 128, Bench.TrainFlopsPerToken(1000, c, 128));
        Assert.Equal(2.0 * 1000 + 4.0 * 4 * 256 * 80, Bench.GenerateFlopsPerToken(1000, c, 80));
    }

    [Fact]
    public void GenerateBytesPerStep_IsWeightsOncePlusEachRowsKeysAndValues()
    {
        var c = new DecoderSpec(512, 128, 4, 4, 256);
        // 1000 weights x 4 bytes, plus 64 rows x 4 layers x (keys + values) x 256 floats x 100 positions x 4 bytes
        Assert.Equal(4000.0 + 64 * 4 * 2 * 256 * 100 * 4.0, Bench.GenerateBytesPerStep(1000, c, 64, 100));
    }

    [Fact]
    public void MatchedGrpo_GeneratesAsManyCompletions_WithTheSamePassesMinibatchesAndLength_AndNoReference()
    {
        var ppo = new PpoSharp.Training.PpoConfig { Iterations = 3 };
        var grpo = Bench.MatchedGrpo(ppo).Validate();
        Assert.Equal(ppo.BatchSize, grpo.BatchSize * grpo.NumGenerations);
        Assert.Equal((8, 8), (grpo.BatchSize, grpo.NumGenerations));
        Assert.Equal((ppo.NumPpoEpochs, ppo.NumMiniBatches, ppo.ResponseLength, ppo.Iterations),
            (grpo.NumIterations, grpo.NumMiniBatches, grpo.MaxCompletionLength, grpo.Iterations));
        Assert.False(grpo.NeedsReference);
        Assert.True(ppo.KlCoef > 0);                                                            // PPO keeps its reference
    }
}
