namespace PpoSharp.Training;

/// <summary>
/// Skips optimizer steps whose loss or gradient norm is NaN or infinite, counts them (<c>skipped_steps</c>), and reports
/// a reason to stop once <c>max_skipped_steps</c> come in a row.
/// </summary>
public sealed class NonFiniteGuard(int maxInARow, TextWriter log, string title)
{
    public int InARow { get; private set; }
    public int Total { get; private set; }

    /// <summary>True when the step may be applied; otherwise counts it and warns.</summary>
    public bool Allows(double loss, double gradNorm, int step)
    {
        if (double.IsFinite(loss) && double.IsFinite(gradNorm))
        {
            InARow = 0;
            return true;
        }
        (InARow, Total) = (InARow + 1, Total + 1);
        log.WriteLine($"warning: {title} step {step}: non-finite loss or gradient norm; optimizer step skipped ({InARow} in a row)");
        return false;
    }

    public bool Exhausted => InARow >= maxInARow;

    /// <summary>The reason to stop, or null.</summary>
    public string? Failure => Exhausted ? $"{InARow} optimizer steps in a row had a non-finite loss or gradient (lower lr?)" : null;

    public void Restore(int inARow, int total) => (InARow, Total) = (inARow, total);
}

/// <summary>The held-out split of a data set: a seeded shuffle, then the first share held out (at least one record stays for training).</summary>
public static class HeldOut
{
    public static (List<T> Train, List<T> HeldOut) Split<T>(IReadOnlyList<T> items, double fraction, int seed)
    {
        var rng = new Random(seed);
        var shuffled = items.OrderBy(_ => rng.Next()).ToList();
        int count = shuffled.Count - TrainCount(shuffled.Count, fraction);
        return (shuffled.Skip(count).ToList(), shuffled.Take(count).ToList());
    }

    /// <summary>How many of <paramref name="n"/> items <see cref="Split{T}"/> keeps for training: all but round(n x fraction), at least one.</summary>
    public static int TrainCount(int n, double fraction) => n < 2 ? n : n - Math.Min(n - 1, (int)Math.Round(n * fraction));
}
