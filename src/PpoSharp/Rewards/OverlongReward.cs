namespace PpoSharp.Rewards;

/// <summary>
/// <c>overlong</c>: DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13). With L the completion's length in
/// tokens (in characters where no token count is known), L_max the longest completion and L_cache
/// = <c>overlong_buffer_len</c>: 0 when L &lt;= L_max - L_cache; (L_max - L_cache - L) / L_cache *
/// <c>overlong_penalty_factor</c> inside the buffer; -<c>overlong_penalty_factor</c> at L_max and beyond.
/// </summary>
public sealed class OverlongReward(int maxLength, int bufferLength, double penaltyFactor) : IRewardFunction
{
    public string Name => "overlong";

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) =>
        batch.Select(x => Penalty(x.ResponseTokens ?? EditDistance.CodePoints(x.Response).Length)).ToArray();

    /// <summary>The penalty for a completion of <paramref name="length"/>: min(0, (L_max - L_cache - L) / L_cache) * factor, floored at -factor.</summary>
    public double Penalty(int length)
    {
        int expected = maxLength - bufferLength;
        if (length <= expected) return 0;
        return Math.Max(-1, (double)(expected - length) / bufferLength) * penaltyFactor;
    }
}
