using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace PpoSharp.Tests;

/// <summary>Temporary directories and small models for tests.</summary>
/// <summary>
/// Tests that run the CLI get a fixed thread count (as if PPOSHARP_THREADS were set), so that no test's results depend on
/// what else the machine runs; the one test of the adaptive count unsets it for itself. Every test process also takes
/// bf16 off by default (PPOSHARP_BF16=0): bf16's default follows the CPU (on with AVX512-BF16), and the tests that hold
/// runs, gradients or logits equal in fp32 must hold on either kind of machine; the bf16 tests set the key themselves.
/// </summary>
internal static class TestProcess
{
    [System.Runtime.CompilerServices.ModuleInitializer]
    internal static void FixThreads()
    {
        if (Environment.GetEnvironmentVariable(CpuThreads.ThreadsVariable) is null)
            Environment.SetEnvironmentVariable(CpuThreads.ThreadsVariable, Environment.ProcessorCount.ToString());
        if (Environment.GetEnvironmentVariable(ComputeKeys.DefaultVariable) is null)
            Environment.SetEnvironmentVariable(ComputeKeys.DefaultVariable, "0");
    }
}

/// <summary>An edit-distance reward that raises the stop signal (as Ctrl+C would) on its n-th call, i.e. during iteration n.</summary>
internal sealed class StopOnCall(PpoSharp.Training.StopSignal stop, int n) : PpoSharp.Rewards.IRewardFunction
{
    private readonly PpoSharp.Rewards.EditDistance _inner = new();
    private int _calls;
    public string Name => "edit-distance";

    public IReadOnlyList<double> Score(IReadOnlyList<PpoSharp.Rewards.RewardInput> batch)
    {
        if (++_calls == n) stop.Request();
        return _inner.Score(batch);
    }
}

public static class TestSupport
{
    /// <summary>
    /// A new empty folder for the running test, deleted once the test has passed and its class has finished, kept when
    /// it fails (see <see cref="TempFolders"/>). Data built once for a class (a static Lazy) may live here too.
    /// </summary>
    /// <summary>
    /// Metrics that measure the machine, not the run (wall-clock phases, throughput, live tensors, threads): the keys
    /// a resumed run may not reproduce.
    /// </summary>
    public static bool IsTiming(string key) =>
        key.EndsWith("_seconds", StringComparison.Ordinal) || key is "tokens_per_second" or "live_tensors" or "threads";

    public static string TempDir() => TempFolders.New();

    /// <summary>
    /// The <c>ppo-sharp.dll</c> to start as a child process: the CLI project's own build output where it exists (its
    /// deps.json names app-local packages, such as LLamaSharp's Microsoft.Extensions assemblies, that the test project
    /// takes from the ASP.NET Core framework instead and so does not copy), else the copy beside the tests.
    /// </summary>
    public static string CliDll
    {
        get
        {
            var project = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", ".."));      // tests/PpoSharp.Tests/
            var own = Path.Combine(project, "..", "..", "src", "PpoSharp.Cli", Path.GetRelativePath(project, AppContext.BaseDirectory), "ppo-sharp.dll");
            return File.Exists(own) ? own : Path.Combine(AppContext.BaseDirectory, "ppo-sharp.dll");
        }
    }

    /// <summary>Runs the <c>ppo-sharp</c> command line in-process: its exit code, standard output and standard error.</summary>
    /// <summary>
    /// The CLI started as a child process (<see cref="CliDll"/>) with <paramref name="args"/> and the extra
    /// <paramref name="environment"/> variables; its stdout is drained, its stderr left to the caller.
    /// </summary>
    public static System.Diagnostics.Process StartCli(string[] args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        start.ArgumentList.Add(CliDll);
        foreach (var a in args) start.ArgumentList.Add(a);
        var process = System.Diagnostics.Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        return process;
    }

    public static (int Code, string Out, string Err) RunCli(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = Cli.Cli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>A new empty folder for data that several test classes share; deleted when the run ends.</summary>
    public static string SharedTempDir() => TempFolders.Shared();

    public static string WriteLines(string dir, string name, params string[] lines)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    /// <summary>
    /// A copy of a tiny Hugging Face model folder from HfData/models (random weights, real tokenizer, reference outputs
    /// in expected.json) in a temporary directory, with its gzipped tokenizer.json unpacked; <paramref name="shared"/> for a
    /// copy that several test classes use (kept until the run ends, see <see cref="SharedTempDir"/>).
    /// </summary>
    public static string HfModel(string name, bool shared = false)
    {
        var source = Path.Combine(AppContext.BaseDirectory, "HfData", "models", name);
        var dir = Path.Combine(shared ? SharedTempDir() : TempDir(), name);
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(source))
        {
            if (!file.EndsWith(".gz", StringComparison.Ordinal)) { File.Copy(file, Path.Combine(dir, Path.GetFileName(file))); continue; }
            using var gz = new System.IO.Compression.GZipStream(File.OpenRead(file), System.IO.Compression.CompressionMode.Decompress);
            using var output = File.Create(Path.Combine(dir, Path.GetFileNameWithoutExtension(file)));
            gz.CopyTo(output);
        }
        return dir;
    }

    public static Decoder TinyModel(int vocab = 20, int seed = 0, int context = 32)
    {
        manual_seed(seed);
        var model = new Decoder(new DecoderSpec(vocab, context, NLayer: 2, NHead: 2, DModel: 16));
        model.eval();
        return model;
    }

    /// <summary>SFT config of a tiny, fast model for the built-in tasks.</summary>
    public static SftConfig TinySft(int steps) => new()
    {
        Steps = steps, BatchSize = 32, Lr = 3e-3, WarmupSteps = 10, EvalEvery = 1000, DModel = 64, NLayer = 2, NHead = 2, ContextLength = 32,
    };

    /// <summary>A policy trained on the sort task once per test run, shared by the CLI and eval tests.</summary>
    public static string TrainedSortModel => LazyModel.Value;

    private static readonly Lazy<string> LazyModel = new(() => TrainSort(noise: 0, steps: 400));

    /// <summary>A policy trained on sort demonstrations of which 60% are sorted descending (the task's systematic flaw).</summary>
    public static string FlawedSortModel => LazyFlawedModel.Value;

    private static readonly Lazy<string> LazyFlawedModel = new(() => TrainSort(noise: 0.6, steps: 600));

    private static string TrainSort(double noise, int steps)
    {
        var dir = SharedTempDir();
        TaskData.Write(new SortLettersTask(), Path.Combine(dir, "data"), 2000, 100, noise, seed: 3);
        var records = Jsonl.ReadChat(Path.Combine(dir, "data", TaskData.SftFile)).Records;
        Demo.RunSft(records, null, Path.Combine(dir, "model"), TinySft(steps), TextWriter.Null);
        return dir;
    }
}
