using System.Diagnostics;
using static TorchSharp.torch;

namespace PpoSharp;

/// <summary>
/// How many CPU threads torch uses, beside other jobs. libtorch's threads (GNU OpenMP) spin while they wait for each
/// other, which is fast alone; but when another process wants the same cores, a spinning thread burns the core its
/// descheduled partner needs, and two runs that each use every core took 4.8x to 10x their time alone (fair share:
/// 2x). A shorter spin would cure that and cost a small model's batch-1 generation half its speed alone.
/// <para>
/// So with no <c>--threads</c> and no <c>PPOSHARP_THREADS</c>, a run starts on every core less those that other
/// processes keep busy and, at step boundaries, gives up as many threads as other processes keep cores busy (and takes
/// them back when they stop). On an idle machine nothing changes. A fixed count (the option or the variable) never
/// changes: float sums split over another number of threads differ in their last bits, so only a fixed count gives
/// bit-identical reruns and resumes. A training run records its fixed count in <c>job.json</c>, and <c>--resume</c>
/// takes it back (<see cref="ForRun"/>). The generation workers always follow the budget, not the current count, so the
/// samples of a seed never depend on the load.
/// </para>
/// </summary>
public static class CpuThreads
{
    /// <summary>The environment variable that sets the thread count when --threads is not given.</summary>
    public const string ThreadsVariable = "PPOSHARP_THREADS";

    /// <summary>Seconds between two looks at the machine's load (shorter windows are noise at 10 ms ticks).</summary>
    public const double WindowSeconds = 1.0;

    private static int? _budget;
    private static bool _adaptive;
    private static CpuSample? _last;

    /// <summary>The most threads this process uses: as configured, else torch's current count (library use).</summary>
    public static int Budget => _budget ?? get_num_threads();

    /// <summary>Whether the count follows the load (no fixed count was given).</summary>
    public static bool Adaptive => _adaptive;

    /// <summary>
    /// --threads, else PPOSHARP_THREADS (both fixed), else every core (adaptive); sets torch's count. A value below 1,
    /// or a variable that is not a whole number, is a user error.
    /// </summary>
    public static int Configure(int? option)
    {
        var env = Environment.GetEnvironmentVariable(ThreadsVariable);
        int? fromEnv = string.IsNullOrEmpty(env) ? null : int.TryParse(env, out var n) ? n : throw new PpoSharpException($"{ThreadsVariable}={env}: expected a whole number of threads");
        int threads = option ?? fromEnv ?? Environment.ProcessorCount;
        if (threads < 1) throw new PpoSharpException($"{(option is null ? ThreadsVariable : "--threads")} must be at least 1 (got {threads})");
        (_budget, _adaptive, _last) = (threads, option is null && fromEnv is null, null);
        set_num_threads(threads);
        return threads;
    }

    /// <summary>A test seam: the cores other processes keep busy, as <see cref="ForRun"/> would measure them.</summary>
    public const string BusyCoresVariable = "PPOSHARP_TEST_BUSY_CORES";

    /// <summary>Seconds over which <see cref="ForRun"/> measures what other processes keep busy.</summary>
    public const double StartWindowSeconds = 0.2;

    /// <summary>
    /// A training run's count at its start. On a <c>--resume</c> of a run that <paramref name="recorded"/> a fixed
    /// count: that count, fixed again (unless --threads or PPOSHARP_THREADS gives another: that one is used, with a
    /// warning that the run is then not bit-identical to an uninterrupted one). Else a fixed count as configured; else
    /// (adaptive) <see cref="Share"/> of the cores that other processes leave idle, measured over
    /// <see cref="StartWindowSeconds"/>, and <see cref="Adapt"/> follows the load from there. Returns the fixed count,
    /// which the caller records, or null for an adaptive run.
    /// </summary>
    public static int? ForRun(int? recorded, TextWriter log)
    {
        if (recorded is int r && _adaptive)
        {
            (_budget, _adaptive) = (r, false);
            set_num_threads(r);
            return r;
        }
        if (!_adaptive)
        {
            if (recorded is int was && was != Budget) Warn(was, log);
            set_num_threads(Budget);
            return Budget;
        }
        set_num_threads(Share(Budget, OtherBusyCores()));
        _last = null;
        return null;
    }

    private static void Warn(int recorded, TextWriter log) =>
        log.WriteLine($"warning: this run started with {recorded} threads and resumes with {Budget} (--threads or {ThreadsVariable}): "
            + $"it continues, but is not bit-identical to an uninterrupted run (resume without them to keep {recorded})");

    /// <summary>
    /// Called on the training thread between steps: once per <see cref="WindowSeconds"/>, sets torch's count to
    /// <see cref="Share"/> of the cores that other processes left idle. No-op for a fixed count. Returns the count.
    /// </summary>
    public static int Adapt()
    {
        int threads = Target(get_num_threads());
        if (threads != get_num_threads()) set_num_threads(threads);
        return threads;
    }

    /// <summary>
    /// What <see cref="Adapt"/> would set, without setting it: <paramref name="current"/> for a fixed count or between
    /// looks, else <see cref="Share"/> of the cores other processes left idle over the last window.
    /// </summary>
    public static int Target(int current)
    {
        if (!_adaptive || !OperatingSystem.IsLinux()) return current;
        if (_last is not null && CpuSample.Now() - _last.Seconds < WindowSeconds) return current;   // cheap between looks: a decode step calls it too
        var now = CpuSample.Read();
        if (_last is null)
        {
            _last = now;
            return current;
        }
        int threads = Share(Budget, now.OtherBusyCores(_last));
        _last = now;
        return threads;
    }

    private static double OtherBusyCores()
    {
        var seam = Environment.GetEnvironmentVariable(BusyCoresVariable);
        if (!string.IsNullOrEmpty(seam)) return double.Parse(seam, System.Globalization.CultureInfo.InvariantCulture);
        if (!OperatingSystem.IsLinux()) return 0;
        var before = CpuSample.Read();
        Thread.Sleep(TimeSpan.FromSeconds(StartWindowSeconds));
        return CpuSample.Read().OtherBusyCores(before);
    }

    /// <summary>
    /// Threads to use when other processes keep <paramref name="otherBusyCores"/> cores busy: the budget less those
    /// cores, rounded to the nearest whole core (so a passing 0.3 of a core takes nothing), and at least one.
    /// </summary>
    public static int Share(int budget, double otherBusyCores) =>
        Math.Clamp(budget - (int)Math.Round(otherBusyCores, MidpointRounding.AwayFromZero), 1, budget);

    /// <summary>Clock ticks from /proc/stat (the machine) and /proc/self/stat (this process) at one moment.</summary>
    private sealed record CpuSample(double Seconds, long MachineBusy, long MachineTotal, long Own, int Cores)
    {
        /// <summary>
        /// Cores kept busy by other processes between <paramref name="before"/> and this sample: the machine's busy
        /// ticks less this process's, over all ticks, times the cores. Steal time (other tenants of a virtual machine)
        /// is left out of both: fewer threads do not get it back.
        /// </summary>
        public double OtherBusyCores(CpuSample before)
        {
            long total = MachineTotal - before.MachineTotal;
            return total <= 0 ? 0 : Math.Max(0, MachineBusy - before.MachineBusy - (Own - before.Own)) * (double)Cores / total;
        }

        public static double Now() => Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;

        public static CpuSample Read()
        {
            var lines = File.ReadAllLines("/proc/stat");
            // cpu user nice system idle iowait irq softirq steal ...
            var f = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
            long busy = f[0] + f[1] + f[2] + f[5] + f[6];
            var self = File.ReadAllText("/proc/self/stat");
            var fields = self[(self.LastIndexOf(')') + 2)..].Split(' ');                  // from field 3 (state) on
            long own = long.Parse(fields[11]) + long.Parse(fields[12]);                      // utime, stime (fields 14, 15)
            return new CpuSample(Now(), busy, busy + f[3] + f[4],
                own, lines.Count(l => l.StartsWith("cpu", StringComparison.Ordinal) && char.IsAsciiDigit(l[3])));
        }
    }
}
