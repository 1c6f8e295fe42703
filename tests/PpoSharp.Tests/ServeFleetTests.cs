using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Rollouts;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// A fleet of real <c>ppo-sharp serve</c> processes on 127.0.0.1 (the CLI started as child processes, with an API key and
/// a weights folder): GRPO with rollout_engine=sglang and weight_sync=disk, and a LoRA GRPO with weight_sync=lora over the
/// vLLM protocol. Sampling at temperature 1, where serve's log-probs (vLLM's raw_logprobs) are the trainer's.
/// </summary>
public class ServeFleetTests
{
    private const string Key = "fleet-test-key";
    private static string Init => Path.Combine(TestSupport.FlawedSortModel, "model");
    private static IReadOnlyList<PromptRecord> Prompts => Jsonl.ReadPrompts(Path.Combine(TestSupport.FlawedSortModel, "data", TaskData.PromptsFile)).Records;

    /// <summary>A <c>ppo-sharp serve</c> child process; its URL read from the line it prints once listening.</summary>
    private sealed class Serve : IDisposable
    {
        private readonly Process _process;
        public string Url { get; }

        public Serve(string weightsDir)
        {
            var cli = TestSupport.CliDll;
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { cli, "serve", "--model", Init, "--port", "0", "--api-key", Key, "--weights-dir", weightsDir }) info.ArgumentList.Add(a);
            _process = Process.Start(info)!;
            var clock = Stopwatch.StartNew();
            string? line;
            while ((line = _process.StandardOutput.ReadLine()) is not null && clock.Elapsed < TimeSpan.FromSeconds(120))
            {
                var m = Regex.Match(line, @"on (http://127\.0\.0\.1:\d+)");
                if (m.Success) { Url = m.Groups[1].Value; return; }
            }
            Kill();
            throw new InvalidOperationException($"serve did not start: {_process.StandardError.ReadToEnd()}");
        }

        public void Kill()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }

        public void Dispose()
        {
            Kill();
            _process.Dispose();
        }
    }

    private static GrpoConfig Grpo(string syncDir, IEnumerable<Serve> servers, params string[] sets) => ConfigLoader.Load(new GrpoConfig(), null,
        ["iterations=4", "batch_size=4", "num_generations=4", "num_mini_batches=2", "max_completion_length=8", "checkpoint_every=2", "lr=3e-4", "seed=3",
         $"weight_sync_dir={syncDir}", "rollout_urls=[" + string.Join(",", servers.Select(s => $"\"{s.Url}\"")) + "]", .. sets], c => c.Validate());

    private static List<Dictionary<string, JsonElement>> Rows(string dir) => MetricsWriter.Read(Path.Combine(dir, MetricsWriter.FileName));

    [Fact]
    public void Grpo_TwoServeProcesses_DiskSync_MatchTrainer_KillOneThenBoth_ResumeOnNewOnes()
    {
        Environment.SetEnvironmentVariable(Fleet.ApiKeyVariable, Key);
        var weights = TestSupport.TempDir();
        var sync = Path.Combine(weights, "sync");
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        var log = new StringWriter();
        using (var a = new Serve(weights))
        using (var b = new Serve(weights))
        {
            using var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo(sync, [a, b], "rollout_engine=sglang", "iterations=6"), log);
            trainer.AfterIteration = row =>
            {
                if ((int)row["iteration"] == 2) a.Kill();                                 // one server gone: the run goes on on the other
                if ((int)row["iteration"] == 4) b.Kill();                                 // both gone: one line
            };
            var e = Assert.ThrowsAny<PpoSharpException>(() => trainer.Train(dir));
            Assert.StartsWith("rollout: every server is out of service", e.Message);
            Assert.Contains($"warning: rollout server {a.Url} out of service", log.ToString());
        }
        var rows = Rows(dir);
        Assert.Equal(4, rows.Count);
        Assert.Equal(1, rows[3]["servers_in_service"].GetInt32());
        using (var c = new Serve(weights))
        using (var d = new Serve(weights))
        using (var resumed = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts, Grpo(sync, [c, d], "rollout_engine=sglang", "iterations=6"), TextWriter.Null))
            resumed.Train(dir, resume: true);
        rows = Rows(dir);
        Assert.Equal([1, 2, 3, 4, 5, 6], rows.Select(r => r["iteration"].GetInt32()));
        foreach (var row in rows)
            Assert.True(row["rollout_logprob_diff_mean"].GetDouble() < 1e-3, $"iteration {row["iteration"]}: diff {row["rollout_logprob_diff_mean"]}");
        Assert.Equal(["v000006"], Directory.GetDirectories(sync).Select(Path.GetFileName));
    }

    [Fact]
    public void GrpoLora_ServeProcess_VllmProtocol_LoraSync_MatchTrainer()
    {
        Environment.SetEnvironmentVariable(Fleet.ApiKeyVariable, Key);
        var weights = TestSupport.TempDir();
        var dir = Path.Combine(TestSupport.TempDir(), "g");
        using var a = new Serve(weights);
        using (var trainer = PpoTrainer.FromRunDirectory(Init, new EditDistance(), Prompts,
            Grpo(Path.Combine(weights, "sync"), [a], "iterations=3", "lora_r=4", "lr=3e-3", "rollout_engine=vllm", "weight_sync=lora"), TextWriter.Null))
            trainer.Train(dir);
        var rows = Rows(dir);
        Assert.Equal(3, rows.Count);
        foreach (var row in rows)
            Assert.True(row["rollout_logprob_diff_mean"].GetDouble() < 1e-3, $"iteration {row["iteration"]}: diff {row["rollout_logprob_diff_mean"]}");
    }
}
