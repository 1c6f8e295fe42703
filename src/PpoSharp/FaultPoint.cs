namespace PpoSharp;

/// <summary>
/// A test seam: named moments of a run where a test makes the process crash, so that the crash safety of checkpoints
/// and of <c>best/</c> is tested at each step of a write rather than only between them. The moments are
/// <c>iteration</c> (before each step or iteration runs), <c>checkpoint-filled</c>, <c>checkpoint-renamed</c>,
/// <c>checkpoint-flipped</c> (see <see cref="Training.Checkpoints.Save"/>), <c>folder-filled</c>,
/// <c>folder-moved-aside</c>, <c>folder-swapped</c> (see <see cref="AtomicFile.ReplaceFolder"/>) and <c>file-written</c>
/// (see <see cref="AtomicFile.Write"/>). With <c>PPOSHARP_TEST_BLOCK_AT=MOMENT:N</c> in its environment a process, the
/// N-th time it reaches MOMENT, writes one line to stderr and blocks until it is killed: a test kills it there, at a
/// known point, instead of racing a running child. In-process tests set <see cref="Hook"/> (and reset it after).
/// Neither is set in normal use, and then reaching a moment does nothing.
/// </summary>
internal static class FaultPoint
{
    public const string Variable = "PPOSHARP_TEST_BLOCK_AT";

    /// <summary>Called with the moment's name each time one is reached (a test's hook throws to simulate a crash there).</summary>
    internal static Action<string, string>? Hook { get; set; } = FromEnvironment();

    /// <summary>Reached <paramref name="moment"/>; <paramref name="path"/> is the file or folder being written there.</summary>
    public static void Reach(string moment, string path) => Hook?.Invoke(moment, path);

    private static Action<string, string>? FromEnvironment()
    {
        var value = Environment.GetEnvironmentVariable(Variable);
        if (string.IsNullOrEmpty(value)) return null;
        var parts = value.Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[1], out int n) || n < 1)
            throw new PpoSharpException($"{Variable}={value}: expected MOMENT:N with N >= 1, e.g. iteration:5");
        int seen = 0;
        return (moment, _) =>
        {
            if (moment != parts[0] || Interlocked.Increment(ref seen) != n) return;
            Console.Error.WriteLine($"{Variable}: blocked at {value}");
            Console.Error.Flush();
            Thread.Sleep(Timeout.Infinite);
        };
    }
}
