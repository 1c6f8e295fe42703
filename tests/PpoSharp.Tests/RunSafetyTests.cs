using PpoSharp.Models;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// Issue 21, section 1, through the real command line: no command writes into its own inputs, absurd sizes are refused
/// before anything is written, a finished run is left alone by --resume, and a failed start leaves nothing behind.
/// </summary>
public class RunSafetyTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => TestSupport.RunCli(args);

    private static string Policy => Path.Combine(TestSupport.TrainedSortModel, "model");
    private static string SortData(string file) => Path.Combine(TestSupport.TrainedSortModel, "data", file);
    private static string HfChat => Path.Combine(AppContext.BaseDirectory, "BadInputs", "hf-chat.jsonl");

    /// <summary>Every file under <paramref name="dir"/> with its bytes (as hex) and last write time: what "nothing changed" compares.</summary>
    private static Dictionary<string, (string Bytes, DateTime Written)> Snapshot(string dir) =>
        Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(dir, f), f => (Convert.ToHexString(File.ReadAllBytes(f)), File.GetLastWriteTimeUtc(f)));

    private static void AssertRefused((int Code, string Out, string Err) result, string message)
    {
        Assert.True(result.Code == 2, $"exit {result.Code}: {result.Err}");
        Assert.Contains(message, result.Err);
        Assert.Single(result.Err.Trim().Split('\n'));
        Assert.Contains("a command never writes into its own inputs", result.Err);
    }

    [Fact]
    public void Sft_OutIsTheInitFolder_RefusedWithAndWithoutForce_ModelUnchanged()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var before = Snapshot(model);
        foreach (var force in new[] { false, true })
        {
            string[] args = ["sft", "--init", model, "--data", HfChat, "--out", model, "--set", "steps=1", .. force ? new[] { "--force" } : []];
            AssertRefused(Run(args), $"--out {model} is the --init folder {model}");
        }
        Assert.Equal(before, Snapshot(model));
    }

    [Fact]
    public void Sft_OutThroughASymlinkOrInsideTheInit_Refused()
    {
        var model = TestSupport.HfModel("tiny-llama3");
        var link = Path.Combine(TestSupport.TempDir(), "link");
        Directory.CreateSymbolicLink(link, model);
        AssertRefused(Run("sft", "--init", model, "--data", HfChat, "--out", link, "--force"), $"--out {link} is the --init folder {model}");
        var inside = Path.Combine(link, "run");
        AssertRefused(Run("sft", "--init", model, "--data", HfChat, "--out", inside), $"--out {inside} is inside the --init folder {model}");
        Assert.False(Directory.Exists(inside));
    }

    [Fact]
    public void Sft_InitOrDataInsideTheOut_RefusedWithForce()
    {
        var parent = Path.GetDirectoryName(TestSupport.HfModel("tiny-llama3"))!;
        var model = Path.Combine(parent, "tiny-llama3");
        var before = Snapshot(parent);
        AssertRefused(Run("sft", "--init", model, "--data", HfChat, "--out", parent, "--force"), $"--out {parent} holds the --init input {model}");
        var data = Path.Combine(parent, "chat.jsonl");
        File.Copy(HfChat, data);
        AssertRefused(Run("sft", "--data", data, "--out", parent, "--force"), $"--out {parent} holds the --data input {data}");
        Assert.Equal(before, Snapshot(parent).Where(p => p.Key != "chat.jsonl").ToDictionary());
    }

    [Fact]
    public void Ppo_OutIsTheRewardModelOrTheCriticInit_Refused()
    {
        var copy = Path.Combine(TestSupport.TempDir(), "rm");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(Policy)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        var before = Snapshot(copy);
        AssertRefused(Run("ppo", "--init", Policy, "--data", SortData("prompts.jsonl"), "--reward", $"edit-distance,model:{copy}:0.5", "--out", copy, "--force"),
            $"--out {copy} is the --reward model: folder {copy}");
        AssertRefused(Run("ppo", "--init", Policy, "--data", SortData("prompts.jsonl"), "--reward", "edit-distance", "--critic-init", copy, "--out", copy, "--force"),
            $"--out {copy} is the --critic-init folder {copy}");
        AssertRefused(Run("eval", "--model", Policy, "--data", SortData("eval.jsonl"), "--samples", SortData("eval.jsonl")),
            $"--samples {SortData("eval.jsonl")} is the --data file");
        Assert.Equal(before, Snapshot(copy));
    }

    [Fact]
    public void OutputGuard_Canonical_ResolvesALinkInTheMiddleOfThePath()
    {
        var root = TestSupport.TempDir();
        var real = Directory.CreateDirectory(Path.Combine(root, "real", "models")).FullName;
        var link = Path.Combine(root, "alias");
        Directory.CreateSymbolicLink(link, Path.Combine(root, "real"));
        Assert.Equal(Path.Combine(real, "x"), OutputGuard.Canonical(Path.Combine(link, "models", "..", "models", "x")));
    }

    [Theory]
    [InlineData("steps=99999999999", "'steps' is out of range: expected an integer from 1 to 100000000 (got 99999999999)")]
    [InlineData("steps=100000001", "'steps' is out of range: expected an integer from 1 to 100000000 (got 100000001)")]
    [InlineData("batch_size=100000000", "'batch_size' is out of range: expected an integer from 1 to 65536 (got 100000000)")]
    [InlineData("context_length=99999999999999", "'context_length' is out of range: expected an integer from 2 to 1048576 (got 99999999999999)")]
    public void Sft_OutOfRangeNumber_RefusedWithTheRange_NothingWritten(string set, string message)
    {
        var outDir = Path.Combine(TestSupport.TempDir(), "out");
        var (code, _, errors) = Run("sft", "--data", SortData("sft.jsonl"), "--out", outDir, "--set", set);
        Assert.Equal(2, code);
        Assert.Contains(message, errors);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void Sft_BatchLargerThanTheData_RefusedBeforeAnythingIsWritten()
    {
        var dir = TestSupport.TempDir();
        var data = TestSupport.WriteLines(dir, "chat.jsonl", [.. File.ReadLines(SortData("sft.jsonl")).Take(190)]);
        var outDir = Path.Combine(dir, "out");
        var (code, _, errors) = Run("sft", "--data", data, "--out", outDir, "--set", "batch_size=1000");
        Assert.Equal(2, code);
        // 190 records, eval_fraction 0.05 holds round(9.5) = 10 out (banker's rounding gives 10): 180 train
        Assert.Contains("batch_size 1000 is larger than the data: 180 training records (eval_fraction 0.05 holds 10 of 190 out)", errors);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public async Task Sft_BatchThatCannotFit_RefusedBeforeAnythingIsWritten()
    {
        // tiny-llama3 (L = 2, h = 32, a = 4, V = 128256), 64 sequences of about 60 tokens: activations alone are
        // 2 x 60 x 64 x 32 x (34 + 5 x 4 x 60 / 32) x 2 = 17.6 MB, far above the 1 MB the child is told it has.
        var dir = TestSupport.TempDir();
        var line = File.ReadAllText(HfChat).Trim().Replace("Hello", string.Join(' ', Enumerable.Repeat("hello there", 20)));
        var data = TestSupport.WriteLines(dir, "chat.jsonl", [.. Enumerable.Repeat(line, 64)]);
        var outDir = Path.Combine(dir, "out");
        using var process = TestSupport.StartCli(["sft", "--init", TestSupport.HfModel("tiny-llama3"), "--data", data, "--out", outDir,
            "--set", "batch_size=64", "--set", "eval_fraction=0"], new Dictionary<string, string> { [MemoryCheck.AvailableVariable] = "1000000" });
        var errors = await process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(process.ExitCode == 2, errors);
        Assert.Contains("batch_size 64 (64 sequences of up to", errors);
        Assert.Contains("and 0.0 GiB is available: it cannot fit (lower batch_size", errors);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void StepBytes_SmallShapes_MatchHandComputedFigures()
    {
        // per layer s b h (34 + 5 a s / h) x 2 = 10 x 4 x 16 x (34 + 5 x 2 x 10 / 16) x 2 = 640 x 40.25 x 2 = 51,520; two layers 103,040;
        // logits 3 x 4 x B T V = 12 x 4 x 10 x 100 = 48,000; 1,000 trainable parameters x 12 = 12,000: 163,040 bytes.
        var spec = new DecoderSpec(100, 32, NLayer: 2, NHead: 2, DModel: 16);
        Assert.Equal(163_040, MemoryCheck.StepBytes(spec, 4, 10, logits: true, trainable: 1000), 6);
        Assert.Equal(115_040, MemoryCheck.StepBytes(spec, 4, 10, logits: false, trainable: 1000), 6);
        var log = new StringWriter();
        MemoryCheck.Check("sft", "batch_size", 4, 10, "records", spec, 4, 10, true, 1000, log, available: 400_000);
        Assert.Equal("", log.ToString());                                                  // 163,040 < 200,000: silent
        MemoryCheck.Check("sft", "batch_size", 4, 10, "records", spec, 4, 10, true, 1000, log, available: 300_000);
        Assert.Contains("sft: warning: batch_size 4 (4 sequences of up to 10 tokens) needs about", log.ToString());
        var e = Assert.Throws<PpoSharpException>(() => MemoryCheck.Check("sft", "batch_size", 4, 10, "records", spec, 4, 10, true, 1000, log, available: 163_039));
        Assert.Contains("it cannot fit", e.Message);
    }

    private static string[] TinySft(string outDir, int steps) =>
        ["sft", "--data", SortData("sft.jsonl"), "--out", outDir, "--set", $"steps={steps}", "--set", "batch_size=4", "--set", "d_model=16", "--set", "n_layer=1",
         "--set", "n_head=2", "--set", "context_length=32"];

    [Fact]
    public void Sft_ResumeOfAFinishedRun_SaysSoAndTouchesNoFile()
    {
        var outDir = Path.Combine(TestSupport.TempDir(), "run");
        Assert.Equal(0, Run(TinySft(outDir, 2)).Code);
        var before = Snapshot(outDir);
        var (code, output, errors) = Run([.. TinySft(outDir, 2), "--resume"]);
        Assert.True(code == 0, errors);
        Assert.Contains($"sft: {outDir} is finished (2 of 2 steps); nothing to resume, nothing changed", output);
        Assert.Equal(before, Snapshot(outDir));
        // a larger step count is not finished: the run goes on from its checkpoint
        var more = Run([.. TinySft(outDir, 3), "--resume"]);
        Assert.True(more.Code == 0, more.Err);
        Assert.Contains("resuming at step 3 of 3", more.Out);
    }

    [Fact]
    public void Sft_InternalErrorBeforeTheFirstCheckpoint_LeavesNoRunFiles()
    {
        // A file named "checkpoints" makes the first checkpoint fail with an IOException (an internal error) after job.json,
        // metrics.jsonl and the events file were written; --force keeps the user's own file and removes what the run wrote.
        var outDir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(outDir, Checkpoints.Folder), "not a folder");
        var (code, _, errors) = Run([.. TinySft(outDir, 1), "--force"]);
        Assert.True(code == 1, errors);
        Assert.Contains("internal error: IOException", errors);
        Assert.Equal([Checkpoints.Folder], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName));
    }

    [Fact]
    public void CleanUpFailedStart_NewFolder_IsRemoved_SoTheNextRunStartsWithoutForce()
    {
        var outDir = Path.Combine(TestSupport.TempDir(), "run");
        Assert.Throws<OverflowException>(() => RunDirectory.CleanUpFailedStart<int>(outDir, resume: false, () =>
        {
            RunDirectory.PrepareOutput(outDir, force: false, job: new RunJob("sft", new SftConfig()));
            File.WriteAllText(Path.Combine(outDir, MetricsWriter.FileName), "{\"step\":1}\n");
            throw new OverflowException("as SftTrainer.Collate threw for a huge batch");
        }));
        Assert.False(Directory.Exists(outDir));
        var (code, _, errors) = Run(TinySft(outDir, 1));
        Assert.True(code == 0, errors);
    }
}
