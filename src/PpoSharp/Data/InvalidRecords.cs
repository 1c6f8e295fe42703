namespace PpoSharp.Data;

/// <summary>
/// Records found unusable after reading (longer than the model's context): an error naming the first, or, with
/// skip-invalid, a list of skipped records that is reported, never dropped silently.
/// </summary>
public sealed class InvalidRecords(bool skip)
{
    private readonly List<string> _skipped = [];

    public IReadOnlyList<string> Skipped => _skipped;

    /// <summary>Throws <paramref name="problem"/>, or when skipping records it and returns true (the caller skips the record).</summary>
    public bool Reject(string problem)
    {
        if (!skip) throw new PpoSharpException(problem);
        _skipped.Add(problem);
        return true;
    }

    /// <summary>A warning with up to ten of the skipped records.</summary>
    public static void Report(IReadOnlyList<string> skipped, TextWriter log)
    {
        if (skipped.Count == 0) return;
        log.WriteLine($"warning: skipped {skipped.Count} invalid record(s):");
        foreach (var s in skipped.Take(10)) log.WriteLine($"  {s}");
        if (skipped.Count > 10) log.WriteLine($"  ... and {skipped.Count - 10} more");
    }
}
