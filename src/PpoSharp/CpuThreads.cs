using System.Runtime.InteropServices;

namespace PpoSharp;

/// <summary>
/// How torch's CPU threads behave beside other jobs. libtorch's thread pool is GNU OpenMP (libgomp): a thread that
/// finishes its share of a parallel region spins, by default for 300,000 iterations, before it sleeps. Alone that
/// saves a wake-up per region; beside another process that does the same, each spinning thread burns the core the
/// other process's straggler needs, and two runs on two cores each took 4.8x their time alone. A short spin keeps
/// nearly all of the speed alone and lets the cores go to whoever has work. libgomp reads its settings once, when
/// libtorch is loaded, so <see cref="PrepareOpenMp"/> must run before the first torch call.
/// </summary>
public static class CpuThreads
{
    /// <summary>The environment variable that sets the thread count when --threads is not given.</summary>
    public const string ThreadsVariable = "PPOSHARP_THREADS";

    /// <summary>libgomp's spin count before a waiting thread sleeps (its own default is 300,000).</summary>
    public const string SpinVariable = "GOMP_SPINCOUNT";

    /// <summary>PpoSharp's spin count: measured in the README's "Beside other jobs" table.</summary>
    public const int DefaultSpinCount = 10_000;

    /// <summary>
    /// Sets GOMP_SPINCOUNT to <see cref="DefaultSpinCount"/> unless the user set it or OMP_WAIT_POLICY. It is set in the
    /// C library's environment, which libgomp reads (.NET's Environment.SetEnvironmentVariable does not reach it on Linux).
    /// Returns whether it was set.
    /// </summary>
    public static bool PrepareOpenMp()
    {
        if (!OperatingSystem.IsLinux() || getenv(SpinVariable) != 0 || getenv("OMP_WAIT_POLICY") != 0) return false;
        return setenv(SpinVariable, DefaultSpinCount.ToString(System.Globalization.CultureInfo.InvariantCulture), 0) == 0;
    }

    /// <summary>--threads, else PPOSHARP_THREADS, else every core; a value below 1 is a user error.</summary>
    public static int Resolve(int? option)
    {
        var env = Environment.GetEnvironmentVariable(ThreadsVariable);
        int? fromEnv = env is null ? null : int.TryParse(env, out var n) ? n : throw new PpoSharpException($"{ThreadsVariable}={env}: expected a whole number of threads");
        int threads = option ?? fromEnv ?? Environment.ProcessorCount;
        if (threads < 1) throw new PpoSharpException($"{(option is null ? ThreadsVariable : "--threads")} must be at least 1 (got {threads})");
        return threads;
    }

    [DllImport("libc")]
    private static extern nint getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    [DllImport("libc")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}
