namespace PpoSharp.Rollouts;

/// <summary>
/// The bookkeeping of <c>max_staleness</c> (TRL AsyncGRPO's key). A completion's staleness is the trainer's weight version
/// minus the version that generated it; a batch's version is its oldest completion's. Batches generated ahead are taken
/// oldest first, and one whose oldest completion is more than <c>max_staleness</c> versions behind is dropped whole (a
/// GRPO group is never split) and its completions counted.
/// </summary>
public static class Staleness
{
    /// <summary>trainer - version: how many updates the weights that generated a completion are behind.</summary>
    public static long Of(long trainerVersion, long rolloutVersion) => trainerVersion - rolloutVersion;

    /// <summary>Whether a batch whose completions carry <paramref name="versions"/> is more than <paramref name="maxStaleness"/> versions behind.</summary>
    public static bool TooStale(IEnumerable<long> versions, long trainerVersion, int maxStaleness) => Of(trainerVersion, versions.Min()) > maxStaleness;

    /// <summary>The mean staleness of a batch's completions: mean over completions of (trainer - version).</summary>
    public static double Mean(IEnumerable<long> versions, long trainerVersion) => versions.Average(v => (double)Of(trainerVersion, v));

    /// <summary>
    /// Takes batches from <paramref name="next"/> (those generated ahead, oldest first, then fresh ones: Ahead = false)
    /// until one is at most <paramref name="maxStaleness"/> versions behind <paramref name="trainerVersion"/>; returns it,
    /// the number of completions dropped on the way and its mean staleness. A fresh batch comes from servers synced to the
    /// trainer's weights: if even it is too stale, the servers do not hold what they confirmed, and the run stops with one
    /// line rather than train on stale weights (or drop batches for ever).
    /// </summary>
    public static (T Batch, int Dropped, double Mean) Take<T>(Func<(T Batch, bool Ahead)> next, Func<T, IReadOnlyList<long>> versions,
        long trainerVersion, int maxStaleness)
    {
        int dropped = 0;
        while (true)
        {
            var (batch, ahead) = next();
            var v = versions(batch);
            if (!TooStale(v, trainerVersion, maxStaleness)) return (batch, dropped, Mean(v, trainerVersion));
            if (!ahead)
                throw new PpoSharpException($"rollout: a batch generated after the sync of version {trainerVersion} came from weight version {v.Min()}, " +
                    $"more than max_staleness {maxStaleness} behind: the servers do not serve the weights they confirmed, so the run stops");
            dropped += v.Count;
        }
    }
}
