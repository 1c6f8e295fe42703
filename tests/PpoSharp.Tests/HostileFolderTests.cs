using System.Diagnostics;
using System.Text.Json.Nodes;
using static PpoSharp.Tests.HostileFolders;

namespace PpoSharp.Tests;

/// <summary>
/// Every case of issue 26 ("a model folder can hang the process, take 8 GB, or be accepted as garbage"), rebuilt from the
/// tiny fixtures and run through the real command line: one line naming the file and the problem, exit 2, no stack trace,
/// nothing written (no --out, the folder unchanged), within a time limit. The cases that used to hang or exhaust memory
/// run as a child process whose peak resident memory (VmHWM, polled) must stay under 1 GB.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class HostileFolderTests
{
    private const long MaxPeakBytes = 1L << 30;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);      // generous for a loaded 2-core CI machine; typical runs take 1-3 s

    private static string Chat => Path.Combine(AppContext.BaseDirectory, "BadInputs", "hf-chat.jsonl");

    /// <summary>(args with {dir} for the spoiled folder and {out}, expected text, run as a child process, run as an unprivileged user)</summary>
    private static readonly Dictionary<string, (Func<string> Build, string[] Args, string Message, bool Child)> Cases = new()
    {
        ["adapter naming itself"] = (() => SelfAdapter(), ["generate", "--model", "{dir}", "--prompt", "hi"], "base_model_name_or_path loops: ", true),
        ["adapter naming itself, sft --init"] = (() => SelfAdapter(), ["sft", "--init", "{dir}", "--data", "{chat}", "--out", "{out}"], "base_model_name_or_path loops: ", true),
        ["two adapters naming each other"] = (() => AdapterPair(), ["generate", "--model", "{dir}", "--prompt", "hi"], "base_model_name_or_path loops: ", true),
        ["model.safetensors is a FIFO"] = (() => Gpt2(d => MakeFifo(Path.Combine(d, "model.safetensors"))), ["generate", "--model", "{dir}", "--prompt", "hi"], "model.safetensors: is a named pipe (FIFO), not a regular file", true),
        ["num_hidden_layers 1000000"] = (() => Llama(d => EditJson(d, "config.json", c => c["num_hidden_layers"] = 1_000_000)), ["generate", "--model", "{dir}", "--prompt", "hi"], "config.json: n_layer must be in [1, 1024] (got 1000000)", true),
        ["vocab_size 2e9"] = (() => Llama(d => EditJson(d, "config.json", c => c["vocab_size"] = 2_000_000_000)), ["generate", "--model", "{dir}", "--prompt", "hi"], "config.json: vocab_size must be in [2, 16777216] (got 2000000000)", true),
        ["intermediate_size 2^30"] = (() => Llama(d => EditJson(d, "config.json", c => c["intermediate_size"] = 1 << 30)), ["generate", "--model", "{dir}", "--prompt", "hi"], "config.json: intermediate_size must be at most 1048576 (got 1073741824)", true),
        ["adapter r 2^30"] = (() => RankAdapter(1 << 30), ["generate", "--model", "{dir}", "--prompt", "hi"], "adapter_config.json: r 1073741824 is larger than the layer it adapts", true),
        ["template range(10**9)"] = (() => Gpt2(d => EditJson(d, "tokenizer_config.json", c => c["chat_template"] = "{% for i in range(10**9) %}x{% endfor %}")), ["generate", "--model", "{dir}", "--prompt", "hi"], "chat template: rendering ", true),
        ["template range(10**7), empty body"] = (() => Gpt2(d => EditJson(d, "tokenizer_config.json", c => c["chat_template"] = "{% for i in range(10**7) %}{% endfor %}")), ["generate", "--model", "{dir}", "--prompt", "hi"], "chat template: rendering ", true),
        ["unexpected 5 GB tensor in a sparse file"] = (() => Llama(d => HugeEntry(d)), ["generate", "--model", "{dir}", "--prompt", "hi"], "unexpected tensor 'model.layers.0.extra.weight'", true),
        ["tokenizer.json linked to /dev/zero"] = (() => Gpt2(d => Replace(Path.Combine(d, "tokenizer.json"), p => File.CreateSymbolicLink(p, "/dev/zero"))), ["generate", "--model", "{dir}", "--prompt", "hi"], "tokenizer.json: is a character device (such as /dev/zero), not a regular file", true),
        ["unreadable config.json"] = (() => Gpt2(d => File.SetUnixFileMode(Path.Combine(d, "config.json"), UnixFileMode.None)), ["generate", "--model", "{dir}", "--prompt", "hi"], "config.json: cannot be read (permission denied)", true),
        ["unreadable folder"] = (() => Gpt2(d => File.SetUnixFileMode(d, UnixFileMode.UserWrite)), ["generate", "--model", "{dir}", "--prompt", "hi"], "tiny-gpt2: the folder cannot be read (permission denied)", true),
        ["bf16 NaN in model.norm.weight"] = (() => Llama(d => PatchTensor(Path.Combine(d, "model.safetensors"), "model.norm.weight", [0xC0, 0x7F])), ["generate", "--model", "{dir}", "--prompt", "hi"], "model.safetensors: tensor 'model.norm.weight' holds NaN or infinite values", false),
        ["GPT-2 ln_f +Inf"] = (() => Gpt2(d => PatchTensor(Path.Combine(d, "model.safetensors"), "transformer.ln_f.weight", BitConverter.GetBytes(float.PositiveInfinity))), ["sft", "--init", "{dir}", "--data", "{chat}", "--out", "{out}"], "model.safetensors: tensor 'transformer.ln_f.weight' holds NaN or infinite values", false),
        ["added token id 2147483647"] = (() => Gpt2(d => EditJson(d, "tokenizer.json", t => t["added_tokens"]![0]!["id"] = int.MaxValue)), ["generate", "--model", "{dir}", "--prompt", "hi"], "tokenizer.json: added token id 2147483647 is outside [0, 16777216)", false),
        ["generation_config eos 999999999"] = (() => Gpt2(d => EditJson(d, "generation_config.json", c => c["eos_token_id"] = 999_999_999)), ["generate", "--model", "{dir}", "--prompt", "hi"], "generation_config.json: eos_token_id 999999999 is outside the vocabulary (0 .. 50256)", false),
        ["generation_config eos -5"] = (() => Gpt2(d => EditJson(d, "generation_config.json", c => c["eos_token_id"] = -5)), ["generate", "--model", "{dir}", "--prompt", "hi"], "generation_config.json: eos_token_id -5 is outside the vocabulary (0 .. 50256)", false),
        ["q_proj of the wrong shape, right byte count"] = (() => Llama(d => EditHeader(Path.Combine(d, "model.safetensors"), h => h["model.layers.0.self_attn.q_proj.weight"]!["shape"] = new JsonArray(16, 64))), ["generate", "--model", "{dir}", "--prompt", "hi"], "model.safetensors: tensor 'model.layers.0.self_attn.q_proj.weight' has shape [16x64], config.json implies [32x32]", false),
        ["num_attention_heads 0"] = (() => Llama(d => EditJson(d, "config.json", c => c["num_attention_heads"] = 0)), ["generate", "--model", "{dir}", "--prompt", "hi"], "config.json: d_model (32) must be a positive multiple of n_head (0)", false),
        ["two chat templates with the same name"] = (() => Gpt2(d => EditJson(d, "tokenizer_config.json", c => c["chat_template"] = new JsonArray(new JsonObject { ["name"] = "default", ["template"] = "a" }, new JsonObject { ["name"] = "default", ["template"] = "b" }))), ["generate", "--model", "{dir}", "--prompt", "hi"], "tokenizer_config.json: chat_template lists two templates named 'default'", false),
        ["config.json linked to itself"] = (() => Gpt2(d => SymlinkToSelf(Path.Combine(d, "config.json"))), ["generate", "--model", "{dir}", "--prompt", "hi"], "config.json: is a loop of symbolic links", false),
        ["model.safetensors linked to itself"] = (() => Gpt2(d => SymlinkToSelf(Path.Combine(d, "model.safetensors"))), ["sft", "--init", "{dir}", "--data", "{chat}", "--out", "{out}"], "model.safetensors: is a loop of symbolic links", false),
    };

    public static TheoryData<string> Names => [.. Cases.Keys];

    [Theory, MemberData(nameof(Names))]
    public async Task HostileFolder_OneLineNamingTheFile_Exit2_FastSmallNothingWritten(string name)
    {
        var (build, template, message, child) = Cases[name];
        var dir = build();
        var outDir = Path.Combine(TestSupport.TempDir(), "out");
        var args = template.Select(a => a.Replace("{dir}", dir).Replace("{out}", outDir).Replace("{chat}", Chat)).ToArray();
        var before = Readable(dir) ? Snapshot(dir) : null;
        var (code, stdout, stderr, elapsed, peak) = child ? RunChild(args, unprivileged: name.StartsWith("unreadable", StringComparison.Ordinal)) : await RunInProcess(args);
        Assert.True(code == 2, $"{name}: exit {code}: {stderr}");
        Assert.True(stderr.Contains(message, StringComparison.Ordinal), $"{name}: expected '{message}' in: {stderr}");
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", stderr);
        Assert.Equal("", stdout);
        Assert.True(elapsed < Limit, $"{name}: took {elapsed.TotalSeconds:0.0} s");
        Assert.True(peak < MaxPeakBytes, $"{name}: peak resident memory {peak >> 20} MB");
        Assert.False(Directory.Exists(outDir), $"{name}: {outDir} was written");
        if (before is not null) Assert.Equal(before, Snapshot(dir));
        File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
    }

    [Fact]
    public async Task SecondSigTerm_DuringTraining_StopsAtOnceWithExit130()
    {
        var data = Path.Combine(TestSupport.TempDir(), "chat.jsonl");
        File.WriteAllLines(data, Enumerable.Repeat(File.ReadAllLines(Chat)[0], 80));  // 76 training records after the 5 % eval split: more than one batch of 64
        var outDir = Path.Combine(TestSupport.TempDir(), "run");
        using var process = TestSupport.StartCli(["sft", "--init", Copy("tiny-gpt2"), "--data", data, "--out", outDir, "--set", "steps=100000", "--set", "batch_size=64"],
            new Dictionary<string, string> { [FaultPoint.Variable] = "iteration:2" });   // the second step blocks: the signals land inside a step
        var lines = new System.Collections.Concurrent.BlockingCollection<string>();
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lines.Add(e.Data); };
        process.BeginErrorReadLine();
        var before = new List<string>();
        while (lines.TryTake(out var first, TimeSpan.FromMinutes(2)) && !first.StartsWith(FaultPoint.Variable, StringComparison.Ordinal)) before.Add(first);
        Assert.False(process.HasExited, string.Join("\n", before));
        Signal(process.Id);
        var seen = new List<string>();
        while (lines.TryTake(out var line, TimeSpan.FromSeconds(30)) && !line.StartsWith("stopping after this step", StringComparison.Ordinal)) seen.Add(line);
        Signal(process.Id);                                                         // the second, while the step still runs
        Assert.True(process.WaitForExit(TimeSpan.FromSeconds(20)), "still running 20 s after two SIGTERMs");
        process.WaitForExit();
        Assert.Equal(130, process.ExitCode);
        Assert.Contains("stopped at once by a second signal", string.Join("\n", seen.Concat(lines)));
    }

    /// <summary>
    /// A hostile folder handed to a running server's <c>/update_weights_from_disk</c>: refused with 400 and the line the
    /// command line prints for it, while the weights loaded before keep serving the same greedy answer.
    /// </summary>
    [Theory]
    [InlineData("bf16 NaN in model.norm.weight")]
    [InlineData("num_hidden_layers 1000000")]
    [InlineData("q_proj of the wrong shape, right byte count")]
    [InlineData("unexpected 5 GB tensor in a sparse file")]
    public async Task HostileFolder_GivenToServe_400WithTheSameLine_OldWeightsKeepServing(string name)
    {
        await using var host = await ServeHost.StartAsync();
        const string body = """{"input_ids":[128000,9906,11,1917],"sampling_params":{"max_new_tokens":4,"temperature":0}}""";
        var before = (await host.PostJson("/generate", body))["output_ids"]!.ToJsonString();
        Directory.Move(Cases[name].Build(), Path.Combine(host.WeightsDir, "hostile"));
        var (status, text) = await host.Post("/update_weights_from_disk", """{"model_path":"hostile","weight_version":"bad"}""");
        Assert.Equal(400, status);
        Assert.Contains(Cases[name].Message, JsonNode.Parse(text)!["message"]!.GetValue<string>());
        Assert.Equal(before, (await host.PostJson("/generate", body))["output_ids"]!.ToJsonString());
    }

    private static void Signal(int pid)
    {
        using var kill = Process.Start("kill", ["-TERM", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }

    private static bool Readable(string dir) => (File.GetUnixFileMode(dir) & UnixFileMode.UserRead) != 0;

    internal static string Gpt2(Action<string> spoil) => Spoil("tiny-gpt2", spoil);

    internal static string Llama(Action<string> spoil) => Spoil("tiny-llama3", spoil);

    private static string Spoil(string fixture, Action<string> spoil)
    {
        var dir = Copy(fixture);
        spoil(dir);
        return dir;
    }

    /// <summary>A header entry for a 5 GB F32 tensor the config does not name, its bytes a hole in a sparse file.</summary>
    private static void HugeEntry(string dir)
    {
        var path = Path.Combine(dir, "model.safetensors");
        var (header, _) = ReadHeader(path);
        long end = header.Where(p => p.Key != "__metadata__").Max(p => p.Value!["data_offsets"]![1]!.GetValue<long>());
        const long count = 5L << 28;                                               // 5 GiB of F32
        EditHeader(path, h => h["model.layers.0.extra.weight"] = new JsonObject
        {
            ["dtype"] = "F32", ["shape"] = new JsonArray(count), ["data_offsets"] = new JsonArray(end, end + 4 * count),
        });
        var (_, newStart) = ReadHeader(path);
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.SetLength(newStart + end + 4 * count);
    }

    private static string SelfAdapter()
    {
        var adapter = Adapter(Copy("tiny-gpt2"), "self");
        EditJson(adapter, "adapter_config.json", c => c["base_model_name_or_path"] = adapter);
        return adapter;
    }

    private static string AdapterPair()
    {
        var baseDir = Copy("tiny-gpt2");
        string a = Adapter(baseDir, "a"), b = Adapter(baseDir, "b");
        EditJson(a, "adapter_config.json", c => c["base_model_name_or_path"] = b);
        EditJson(b, "adapter_config.json", c => c["base_model_name_or_path"] = a);
        return a;
    }

    internal static string RankAdapter(int r)
    {
        var adapter = Adapter(Copy("tiny-gpt2"), "rank");
        EditJson(adapter, "adapter_config.json", c => c["r"] = r);
        return adapter;
    }

    private static async Task<(int Code, string Out, string Err, TimeSpan Elapsed, long Peak)> RunInProcess(string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var clock = Stopwatch.StartNew();
        int code = await Task.Run(() => Cli.Cli.Run(args, stdout, stderr)).WaitAsync(Limit);        // TimeoutException: a hang
        return (code, stdout.ToString(), stderr.ToString(), clock.Elapsed, 0);
    }

    /// <summary>
    /// Runs ppo-sharp as a child process, killed after <see cref="Limit"/>, polling its peak resident memory (VmHWM);
    /// <paramref name="unprivileged"/> runs it as nobody when the tests run as root, so that file permissions apply.
    /// </summary>
    internal static (int Code, string Out, string Err, TimeSpan Elapsed, long Peak) RunChild(string[] args, bool unprivileged = false)
    {
        bool asNobody = unprivileged && Environment.UserName == "root" && File.Exists("/usr/bin/setpriv");
        var start = new ProcessStartInfo(asNobody ? "/usr/bin/setpriv" : "dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        if (asNobody)
        {
            foreach (var a in new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "dotnet" }) start.ArgumentList.Add(a);
            start.Environment["HOME"] = start.Environment["DOTNET_CLI_HOME"] = Path.GetTempPath();
        }
        start.ArgumentList.Add(TestSupport.CliDll);
        foreach (var a in args) start.ArgumentList.Add(a);
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var stdout = Task.Run(() => process.StandardOutput.ReadToEnd());
        var stderr = Task.Run(() => process.StandardError.ReadToEnd());
        long peak = 0;
        while (!process.WaitForExit(10))
        {
            peak = Math.Max(peak, PeakResident(process.Id));
            if (clock.Elapsed > Limit) { process.Kill(entireProcessTree: true); Assert.Fail($"killed after {Limit.TotalSeconds} s: {string.Join(' ', args)}"); }
        }
        return (process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult(), clock.Elapsed, peak);
    }

    /// <summary>VmHWM of /proc/PID/status in bytes (0 once the process is gone).</summary>
    private static long PeakResident(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
    }
}
