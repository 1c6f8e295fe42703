using System.Runtime.InteropServices;
using System.Text.Json;

namespace PpoSharp.Training;

/// <summary>
/// Crash-safe checkpoints in <c>DIR/checkpoints/</c>: each is written into a temporary folder, flushed, then renamed
/// to <c>step-NNNNNN</c>; the <c>latest</c> pointer is replaced atomically after that, and only the newest
/// <c>keep</c> are kept. A SIGKILL at any moment leaves <c>latest</c> naming a complete checkpoint (or none yet).
/// </summary>
public static class Checkpoints
{
    public const string Folder = "checkpoints", Latest = "latest", StateFile = "state.json", OptimizerFile = "optimizer.bin";

    /// <summary>Saves a model, its optimizer and the step state (SFT and reward-model checkpoints).</summary>
    public static void SaveTraining(string dir, TorchSharp.torch.nn.Module model, TorchSharp.Modules.OptimizerHelper optimizer, StepState state)
    {
        TorchSharp.PyBridge.PyBridgeModuleExtensions.save_safetensors(model, Path.Combine(dir, RunDirectory.ModelFile));
        optimizer.save_state_dict(Path.Combine(dir, OptimizerFile));
        WriteState(dir, state);
    }

    /// <summary>Restores what <see cref="SaveTraining"/> wrote; an unusable checkpoint is a <see cref="PpoSharpException"/>.</summary>
    public static StepState RestoreTraining(string dir, TorchSharp.torch.nn.Module model, TorchSharp.Modules.OptimizerHelper optimizer)
    {
        var state = ReadState<StepState>(dir);
        RunDirectory.LoadWeights(model, Path.Combine(dir, RunDirectory.ModelFile));
        LoadOptimizer(optimizer, dir);
        return state;
    }

    /// <summary>Restores an optimizer's state from a checkpoint folder; a missing or corrupt file is a <see cref="PpoSharpException"/>.</summary>
    public static void LoadOptimizer(TorchSharp.Modules.OptimizerHelper optimizer, string dir)
    {
        var path = Path.Combine(dir, OptimizerFile);
        if (!File.Exists(path)) throw new PpoSharpException($"{path}: missing");
        try { optimizer.load_state_dict(path); }
        catch (Exception e) when (e is not PpoSharpException) { throw new PpoSharpException($"{path}: corrupt ({e.Message.Split('\n')[0]})"); }
    }

    public static string Root(string runDir) => Path.Combine(runDir, Folder);

    /// <summary>Writes a checkpoint for <paramref name="step"/> with <paramref name="write"/> (given the folder to fill); returns its path.</summary>
    public static string Save(string runDir, int step, int keep, Action<string> write)
    {
        var root = Root(runDir);
        Directory.CreateDirectory(root);
        var name = $"step-{step:D6}";
        var tmp = Path.Combine(root, $".tmp-{name}");
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        write(tmp);
        foreach (var f in Directory.GetFiles(tmp)) Flush(f);
        var final = Path.Combine(root, name);
        if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
        Directory.Move(tmp, final);
        var pointer = Path.Combine(root, Latest);
        File.WriteAllText(pointer + ".tmp", name);
        Flush(pointer + ".tmp");
        File.Move(pointer + ".tmp", pointer, overwrite: true);
        foreach (var old in Complete(root).Skip(keep)) Directory.Delete(old, recursive: true);
        return final;
    }

    /// <summary>Checkpoints to try when resuming, best first: the one <c>latest</c> names, then the others newest first.</summary>
    public static List<string> Candidates(string runDir)
    {
        var root = Root(runDir);
        if (!Directory.Exists(root)) return [];
        var list = Complete(root);
        var pointer = Path.Combine(root, Latest);
        if (File.Exists(pointer) && Path.Combine(root, File.ReadAllText(pointer).Trim()) is var named && Directory.Exists(named))
            list = [named, .. list.Where(d => d != named)];
        return list;
    }

    /// <summary>
    /// Calls <paramref name="restore"/> on each candidate until one succeeds; a corrupt one (restore throws
    /// <see cref="PpoSharpException"/>) gets a warning and the previous one is tried.
    /// </summary>
    public static T Resume<T>(string runDir, TextWriter log, Func<string, T> restore)
    {
        var candidates = Candidates(runDir);
        if (candidates.Count == 0) throw new PpoSharpException($"{runDir}: no checkpoint to resume from (checkpoints are written every checkpoint_every iterations)");
        foreach (var dir in candidates)
        {
            try { return restore(dir); }
            catch (PpoSharpException e) { log.WriteLine($"warning: checkpoint {dir} is unusable ({e.Message}); trying the previous one"); }
        }
        throw new PpoSharpException($"{runDir}: every checkpoint is unusable (see the warnings above)");
    }

    public static void WriteState<T>(string dir, T state) => Json.WriteFile(Path.Combine(dir, StateFile), state);

    /// <summary>The state file of <paramref name="dir"/>, or null when there is none.</summary>
    public static T? ReadStateOrNull<T>(string dir) where T : class => Json.ReadFile<T>(Path.Combine(dir, StateFile));

    public static T ReadState<T>(string dir) where T : class =>
        ReadStateOrNull<T>(dir) ?? throw new PpoSharpException($"{Path.Combine(dir, StateFile)}: missing");

    /// <summary>Keeps the first <paramref name="rows"/> lines of <c>metrics.jsonl</c>: the rows written after the checkpoint are redone.</summary>
    public static void TruncateMetrics(string runDir, int rows)
    {
        var path = Path.Combine(runDir, MetricsWriter.FileName);
        var lines = File.Exists(path) ? File.ReadLines(path).Take(rows).ToList() : [];
        if (lines.Count < rows) throw new PpoSharpException($"{path}: has {lines.Count} rows, the checkpoint expects {rows}");
        File.WriteAllLines(path + ".tmp", lines);
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>The step of the newest complete checkpoint of a run folder (its <c>step-NNNNNN</c> name), or null when there is none.</summary>
    public static int? NewestStep(string runDir)
    {
        var root = Root(runDir);
        if (!Directory.Exists(root)) return null;
        return Complete(root).Select(d => int.TryParse(Path.GetFileName(d)["step-".Length..], out int n) ? n : (int?)null).Max();
    }

    private static List<string> Complete(string root) =>
        Directory.GetDirectories(root, "step-*").OrderByDescending(d => d, StringComparer.Ordinal).ToList();

    private static void Flush(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Flush(flushToDisk: true);
    }
}

/// <summary>
/// Ctrl+C (SIGINT) and SIGTERM as a request to stop after the current step or iteration, with a checkpoint;
/// a second Ctrl+C or SIGTERM ends the process at once with exit code 130, even while a step or a model load runs.
/// </summary>
public sealed partial class StopSignal : IDisposable
{
    private readonly PosixSignalRegistration? _term;
    private volatile bool _requested;

    private StopSignal(bool listen)
    {
        if (!listen) return;
        Console.CancelKeyPress += OnCancel;
        _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; OnSignal(); });
    }

    /// <summary>Listens to Ctrl+C and SIGTERM until disposed.</summary>
    public static StopSignal Listen() => new(true);

    /// <summary>A signal that only <see cref="Request"/> raises (library use and tests).</summary>
    public static StopSignal Manual() => new(false);

    public bool Requested => _requested;

    public void Request() => _requested = true;

    /// <summary>Exit code of a second signal: 128 + SIGINT, what shells report for an interrupted command.</summary>
    public const int ExitNow = 130;

    private void OnCancel(object? sender, ConsoleCancelEventArgs e)
    {
        e.Cancel = true;
        OnSignal();
    }

    private void OnSignal()
    {
        if (!_requested)
        {
            _requested = true;
            Console.Error.WriteLine("stopping after this step with a checkpoint (Ctrl+C or SIGTERM again stops at once)");
            return;
        }
        Console.Error.WriteLine("stopped at once by a second signal (no checkpoint of the current step)");
        Console.Error.Flush();
        // Environment.Exit runs libtorch's static destructors while a step may still run on its threads (a segfault, exit
        // 139); _exit ends the process at once, as the default action of a signal would.
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) ExitImmediately(ExitNow);
        Environment.Exit(ExitNow);
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "_exit")]
    private static partial void ExitImmediately(int code);

    public void Dispose()
    {
        Console.CancelKeyPress -= OnCancel;
        _term?.Dispose();
    }
}

/// <summary>A run stopped early (Ctrl+C, SIGTERM, or too many non-finite steps) after writing a checkpoint.</summary>
public sealed class TrainingStoppedException(string message, bool interrupted) : PpoSharpException(message)
{
    public bool Interrupted { get; } = interrupted;
}
