using System.Diagnostics;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;
using PpoSharp.Training;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Benchmarks;

/// <summary>
/// Speed and memory against the machine's own measured limit (fp32 GEMM throughput): training tokens/s and MFU,
/// generation tokens/s and MFU with the KV cache, the cache's speed-up and time scaling, PPO phase shares, and memory
/// growth over many PPO iterations. One process, one run; medians of repeats after a warm-up.
/// </summary>
public static class Bench
{
    /// <summary>Parameters that take part in matrix multiplies: all but the token and position embedding tables (the LM head counts).</summary>
    public static long MatmulParameters(Gpt model) =>
        model.named_parameters().Where(p => !p.name.StartsWith("wte", StringComparison.Ordinal) && !p.name.StartsWith("wpe", StringComparison.Ordinal))
            .Sum(p => p.parameter.numel());

    /// <summary>
    /// Training FLOPs per token (forward + backward), as in PaLM (Chowdhery et al. 2022, appendix B):
    /// 6 N + 12 L d T, with N the matmul parameters, L layers, d the width and T the sequence length.
    /// </summary>
    public static double TrainFlopsPerToken(long matmulParameters, GptConfig c, int seqLen) => 6.0 * matmulParameters + 12.0 * c.NLayer * c.DModel * seqLen;

    /// <summary>Generation FLOPs per token (forward only): 2 N + 4 L d C, with C the mean number of cached positions attended.</summary>
    public static double GenerateFlopsPerToken(long matmulParameters, GptConfig c, double meanContext) => 2.0 * matmulParameters + 4.0 * c.NLayer * c.DModel * meanContext;

    public static Dictionary<string, object> Run(bool quick, TextWriter log)
    {
        torch.set_num_threads(Environment.ProcessorCount);
        var r = new Dictionary<string, object> { ["threads"] = torch.get_num_threads(), ["quick"] = quick };
        // This machine's throughput drifts (a shared host): the GEMM is measured before each section, and every MFU is
        // taken against the best of them, the machine's demonstrated limit (the worst is reported beside it).
        var limits = new List<double>();
        double Limit()
        {
            limits.Add(Gemm(1024, quick ? 11 : 21));
            return limits[^1];
        }
        double first = Limit();
        r["gemm_gflops_2048x256x1024"] = Gemm(2048, quick ? 11 : 21, k: 256, n: 1024);
        log.WriteLine($"bench: fp32 GEMM 1024^3 {first:F1} GFLOP/s");

        foreach (int d in new[] { 256, 512 })
        {
            Limit();
            var (tps, gflops) = Train(d, quick ? 3 : 8);
            (r[$"train_tokens_per_second_d{d}"], r[$"train_gflops_d{d}"]) = (tps, gflops);
            log.WriteLine($"bench: train d_model {d}: {tps:F0} tokens/s, {gflops:F1} GFLOP/s");
        }

        var gen = GenerateModel();
        foreach (int b in new[] { 1, 64 })
        {
            Limit();
            var (seconds, tps, gflops) = Generate(gen, b, 256, true);
            (r[$"generate_tokens_per_second_b{b}"], r[$"generate_gflops_b{b}"]) = (tps, gflops);
            log.WriteLine($"bench: generate batch {b}, 256 new tokens: {seconds:F2} s, {tps:F0} tokens/s, {gflops:F1} GFLOP/s");
        }
        int speedupTokens = quick ? 128 : 256;
        double cached = Generate(gen, 1, speedupTokens, true).Seconds, uncached = Generate(gen, 1, speedupTokens, false).Seconds;
        r["kv_cache_speedup"] = uncached / cached;
        r["kv_cache_speedup_tokens"] = speedupTokens;
        double t256 = Generate(gen, 16, 256, true).Seconds, t512 = Generate(gen, 16, 512, true).Seconds;
        r["generate_time_scaling"] = t512 / t256;
        log.WriteLine($"bench: KV cache speed-up {uncached / cached:F1}x at {speedupTokens} tokens; 512 vs 256 new tokens: {t512 / t256:F2}x the time");

        PpoFigures(r, quick ? 3 : 5, quick ? 20 : 100, log);
        r["peak_rss_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
        Limit();
        double best = limits.Max();
        (r["gemm_gflops"], r["gemm_gflops_min"]) = (best, limits.Min());
        foreach (var key in r.Keys.Where(k => k.Contains("_gflops_", StringComparison.Ordinal) && !k.StartsWith("gemm", StringComparison.Ordinal)).ToList())
            r[key.Replace("_gflops_", "_mfu_")] = (double)r[key] / best;
        (r["train_tokens_per_second"], r["train_mfu"]) = (r["train_tokens_per_second_d256"], r["train_mfu_d256"]);
        (r["generate_tokens_per_second"], r["generate_mfu"]) = (r["generate_tokens_per_second_b64"], r["generate_mfu_b64"]);
        log.WriteLine($"bench: GEMM limit {best:F1} GFLOP/s (lowest seen {limits.Min():F1}); train MFU {r["train_mfu"]:F2} (d 256), {r["train_mfu_d512"]:F2} (d 512); generate MFU {r["generate_mfu"]:F3} (batch 64), {r["generate_mfu_b1"]:F3} (batch 1)");
        return r;
    }

    /// <summary>The figures as a two-column table.</summary>
    public static void Print(Dictionary<string, object> figures, TextWriter log)
    {
        var table = new Spectre.Console.Table().AddColumn("figure").AddColumn(new Spectre.Console.TableColumn("value").RightAligned());
        foreach (var (key, value) in figures)
            table.AddRow(key, value is double d ? d.ToString(Math.Abs(d) >= 100 ? "F0" : "F3", System.Globalization.CultureInfo.InvariantCulture) : value.ToString()!);
        Reporting.Consoles.For(log).Write(table);
    }

    /// <summary>Median GFLOP/s of an (m x k) by (k x n) fp32 matmul, after half a second of warm-up (threads, caches, clock).</summary>
    private static double Gemm(int m, int repeats, int? k = null, int? n = null)
    {
        using var scope = NewDisposeScope();
        var a = randn(m, k ?? m);
        var b = randn(k ?? m, n ?? m);
        double flops = 2.0 * m * (k ?? m) * (n ?? m);
        for (var warm = Stopwatch.StartNew(); warm.Elapsed.TotalSeconds < 0.5;) a.matmul(b).Dispose();
        var times = Enumerable.Range(0, repeats).Select(_ => Time(() => a.matmul(b).Dispose())).ToList();
        return flops / Median(times) / 1e9;
    }

    /// <summary>Tokens/s and MFU of forward + backward + AdamW on a 4-layer model, vocabulary 512, batch 16 x 128.</summary>
    private static (double TokensPerSecond, double Gflops) Train(int d, int steps)
    {
        manual_seed(0);
        var config = new GptConfig(512, 128, 4, d / 64, d);
        var model = new Gpt(config);
        model.train();
        using var optimizer = optim.AdamW(model.parameters(), lr: 1e-4);
        var ids = randint(0, 512, [16, 128]);
        var targets = ids.roll(-1, 1);
        double Step() => Time(() =>
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            nn.functional.cross_entropy(model.forward(ids).flatten(0, 1), targets.flatten()).backward();
            optimizer.step();
        });
        Step();
        double seconds = Median(Enumerable.Range(0, steps).Select(_ => Step()).ToList());
        double tps = 16 * 128 / seconds;
        return (tps, tps * TrainFlopsPerToken(MatmulParameters(model), config, 128) / 1e9);
    }

    private static Gpt GenerateModel()
    {
        manual_seed(0);
        var model = new Gpt(new GptConfig(512, 640, 4, 4, 256));
        model.eval();
        return model;
    }

    /// <summary>Seconds, generated tokens/s and achieved GFLOP/s of sampling <paramref name="newTokens"/> tokens for a batch of 16-token prompts.</summary>
    private static (double Seconds, double TokensPerSecond, double Gflops) Generate(Gpt model, int batch, int newTokens, bool cache)
    {
        using var scope = NewDisposeScope();
        var special = new SpecialTokenIds(0, -1, 1, 2, 3);                     // EOS -1 never matches: every row runs to the cap
        var prompts = randint(4, 512, [batch, 16]);
        var mask = ones(batch, 16, ScalarType.Bool);
        var options = new SamplingOptions(newTokens);
        double seconds = Time(() => Sampling.Generate(model, prompts, mask, options, special, new Generator(1), cache).Dispose());
        double tps = batch * newTokens / seconds;
        double flops = GenerateFlopsPerToken(MatmulParameters(model), model.Config, 16 + newTokens / 2.0);
        return (seconds, tps, tps * flops / 1e9);
    }

    /// <summary>PPO iteration time and phase shares on the sort task (default model), then RSS and live-tensor growth over a soak.</summary>
    private static void PpoFigures(Dictionary<string, object> r, int iterations, int soak, TextWriter log)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{Environment.ProcessId}");
        try
        {
            TaskData.Write(new SortLettersTask(), dir, 1000, 10, 0, 1);
            var prompts = Jsonl.ReadPrompts(Path.Combine(dir, TaskData.PromptsFile)).Records;
            var tokenizer = SftTrainer.NewTokenizer(TokenizerKind.Char, Jsonl.ReadChat(Path.Combine(dir, TaskData.SftFile)).Records);
            manual_seed(0);
            var model = new Gpt(new SftConfig().ModelConfig(tokenizer.VocabSize));
            RunDirectory.Save(Path.Combine(dir, "init"), RunDirectory.PolicyKind, model, model.Config, tokenizer, new SftConfig());

            var timing = new PpoConfig { Iterations = iterations, CheckpointEvery = 1000 };
            var rows = RunPpo(dir, "timing", prompts, timing);
            double M(string key) => Median(rows.Skip(1).Select(x => x[key].GetDouble()).ToList());
            double total = M("rollout_seconds") + M("update_seconds");
            r["ppo_iteration_seconds"] = total;
            r["ppo_share_generate"] = M("generate_seconds") / total;
            r["ppo_share_forward"] = M("forward_seconds") / total;
            r["ppo_share_reward"] = M("reward_seconds") / total;
            r["ppo_share_update"] = M("update_seconds") / total;
            log.WriteLine($"bench: PPO iteration (batch 64, 16 new tokens, d_model 128): {total:F2} s; generate {r["ppo_share_generate"]:P0}, "
                + $"reference + critic + old log-probs {r["ppo_share_forward"]:P0}, reward {r["ppo_share_reward"]:P0}, update {r["ppo_share_update"]:P0}");

            var soakRows = RunPpo(dir, "soak", prompts, timing with { Iterations = soak, BatchSize = 16, NumMiniBatches = 2 }, trackRss: true);
            int first = Math.Min(5, soakRows.Count - 1);
            r["soak_iterations"] = soak;
            r["live_tensor_growth"] = soakRows[^1]["live_tensors"].GetInt64() - soakRows[first]["live_tensors"].GetInt64();
            r["rss_growth_mb"] = soakRows[^1]["rss_mb"].GetDouble() - soakRows[first]["rss_mb"].GetDouble();
            log.WriteLine($"bench: {soak} PPO iterations: live tensors {r["live_tensor_growth"]:+0;-0;0}, RSS {r["rss_growth_mb"]:+0.0;-0.0;0} MB after iteration {first + 1}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    private static List<Dictionary<string, System.Text.Json.JsonElement>> RunPpo(string dir, string name, IReadOnlyList<PromptRecord> prompts, PpoConfig config, bool trackRss = false)
    {
        using var trainer = PpoTrainer.FromRunDirectory(Path.Combine(dir, "init"), new EditDistance(), prompts, config, TextWriter.Null);
        var outDir = Path.Combine(dir, name);
        if (trackRss) trainer.AfterIteration = row => row["rss_mb"] = RssMb();
        trainer.Train(outDir);
        return MetricsWriter.Read(Path.Combine(outDir, MetricsWriter.FileName));
    }

    /// <summary>Resident set size after a full garbage collection, in MB.</summary>
    private static double RssMb()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        using var p = Process.GetCurrentProcess();
        return p.WorkingSet64 / 1048576.0;
    }

    private static double Time(Action action)
    {
        var clock = Stopwatch.StartNew();
        action();
        return clock.Elapsed.TotalSeconds;
    }

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}
