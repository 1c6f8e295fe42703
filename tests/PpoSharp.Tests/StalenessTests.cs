using PpoSharp.Rollouts;

namespace PpoSharp.Tests;

/// <summary>The max_staleness bookkeeping on hand-made weight versions: which batches are dropped, the count, the staleness mean.</summary>
public class StalenessTests
{
    /// <summary>Batches handed out in order: those generated ahead, then fresh ones; records how many were asked for.</summary>
    private sealed class Source(long[][] ahead, long[] fresh)
    {
        public int Taken { get; private set; }
        public (long[], bool) Next()
        {
            Taken++;
            return Taken <= ahead.Length ? (ahead[Taken - 1], true) : (fresh, false);
        }
    }

    [Fact]
    public void Take_TrainerAtThreeMaxTwo_DropsBatchesFromVersionZero_TakesTheOneFromVersionOne()
    {
        // trainer at version 3, max_staleness 2: a batch whose oldest completion is from version 0 is 3 behind (> 2): dropped;
        // [1, 2] is 2 behind at worst: taken, staleness mean ((3-1) + (3-2)) / 2 = 1.5; dropped 2 + 2 = 4 completions
        var source = new Source([[0, 0], [2, 0], [1, 2], [3, 3]], [3, 3]);
        var (batch, dropped, mean) = Staleness.Take(source.Next, b => b, 3, 2);
        Assert.Equal([1, 2], batch);
        Assert.Equal(4, dropped);
        Assert.Equal(1.5, mean);
        Assert.Equal(3, source.Taken);                                   // the fourth batch stays queued
    }

    [Fact]
    public void Take_EveryBatchAheadTooStale_FreshBatchTaken_AllAheadCounted()
    {
        // trainer 5, max_staleness 1: [3, 4, 4] is 2 behind, [3] too; the fresh batch [5, 5] is 0 behind; dropped 3 + 1
        var source = new Source([[3, 4, 4], [3]], [5, 5]);
        var (batch, dropped, mean) = Staleness.Take(source.Next, b => b, 5, 1);
        Assert.Equal([5, 5], batch);
        Assert.Equal(4, dropped);
        Assert.Equal(0, mean);
    }

    [Fact]
    public void Take_SynchronousMaxZero_FreshBatchFromTheTrainersVersion_StalenessZero()
    {
        var (batch, dropped, mean) = Staleness.Take(new Source([], [7, 7, 7]).Next, b => b, 7, 0);
        Assert.Equal([7, 7, 7], batch);
        Assert.Equal((0, 0.0), (dropped, mean));
    }

    [Fact]
    public void Take_FreshBatchTooStale_ServersLag_OneLineNotALoop()
    {
        // synced to 6, yet a fresh batch says version 4: 2 behind with max_staleness 1
        var e = Assert.Throws<PpoSharpException>(() => Staleness.Take(new Source([], [4, 6]).Next, b => b, 6, 1));
        Assert.Equal("rollout: a batch generated after the sync of version 6 came from weight version 4, more than max_staleness 1 behind: "
            + "the servers do not serve the weights they confirmed, so the run stops", e.Message);
    }

    [Theory]
    [InlineData(new long[] { 2, 3 }, 3, 0.5)]                          // (1 + 0) / 2
    [InlineData(new long[] { 0, 0, 1, 3 }, 4, 3.0)]                    // (4 + 4 + 3 + 1) / 4
    public void Mean_MixedVersions_PerCompletionAverage(long[] versions, long trainer, double expected) =>
        Assert.Equal(expected, Staleness.Mean(versions, trainer));
}
