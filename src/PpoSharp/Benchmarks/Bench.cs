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
public static partial class Bench
{
    /// <summary>
    /// Parameters that take part in matrix multiplies: all but the token and position embedding tables; the LM head
    /// counts, also when it is the (tied) embedding table.
    /// </summary>
    public static long MatmulParameters(Decoder model) =>
        model.named_parameters().Where(p => !p.name.StartsWith("embed", StringComparison.Ordinal) && !p.name.StartsWith("pos_embed", StringComparison.Ordinal))
            .Sum(p => p.parameter.numel()) + (model.Config.TiedHead ? model.Embeddings.numel() : 0);

    /// <summary>
    /// Training FLOPs per token (forward + backward), as in PaLM (Chowdhery et al. 2022, appendix B):
    /// 6 N + 12 L d T, with N the matmul parameters, L layers, d the width and T the sequence length.
    /// </summary>
    public static double TrainFlopsPerToken(long matmulParameters, DecoderSpec c, int seqLen) => 6.0 * matmulParameters + 12.0 * c.NLayer * c.DModel * seqLen;

    /// <summary>Generation FLOPs per token (forward only): 2 N + 4 L d C, with C the mean number of cached positions attended.</summary>
    public static double GenerateFlopsPerToken(long matmulParameters, DecoderSpec c, double meanContext) => 2.0 * matmulParameters + 4.0 * c.NLayer * c.DModel * meanContext;

    /// <summary>
    /// Bytes a decode step reads from memory: every matmul weight once (4 bytes each) plus, for each of the batch rows,
    /// the cached keys and values of every layer, 2 L d C floats (C the mean number of cached positions). At batch 64
    /// the cache dominates, so generation is bound by memory bandwidth rather than by arithmetic.
    /// </summary>
    public static double GenerateBytesPerStep(long matmulParameters, DecoderSpec c, int batch, double meanContext) =>
        4.0 * matmulParameters + 4.0 * 2 * c.NLayer * c.DModel * meanContext * batch;

    public static Dictionary<string, object> Run(bool quick, TextWriter log, Func<string[], Process>? startSelf = null)
    {
        var r = new Dictionary<string, object> { ["threads"] = CpuThreads.Budget, ["threads_adaptive"] = CpuThreads.Adaptive, ["quick"] = quick };
        var limit = new PairedLimit();
        double first = Gemm(1024, quick ? 11 : 21);
        r["gemm_gflops_2048x256x1024"] = Gemm(2048, quick ? 11 : 21, k: 256, n: 1024);
        log.WriteLine($"bench: fp32 GEMM 1024^3 {first:F1} GFLOP/s, 2048x256x1024 {r["gemm_gflops_2048x256x1024"]:F1} GFLOP/s");
        r["gemm_gflops_bf16"] = CpuHasBf16 ? Gemm(1024, quick ? 11 : 21, dtype: ScalarType.BFloat16) : Gemm(256, 3, dtype: ScalarType.BFloat16, warmSeconds: 0.1);
        log.WriteLine($"bench: bf16 GEMM {(CpuHasBf16 ? "1024^3" : "256^3 (no AVX512-BF16 or AMX on this CPU)")} {r["gemm_gflops_bf16"]:F1} GFLOP/s");
        foreach (int d in new[] { 256, 512 })
        {
            var (seconds, mfu, flops) = Train(d, (step, stepFlops) => limit.Measure(step, stepFlops, quick ? 3 : 8));
            (r[$"train_tokens_per_second_d{d}"], r[$"train_mfu_d{d}"]) = (TrainTokens / seconds, mfu);
            log.WriteLine($"bench: train d_model {d}: {TrainTokens / seconds:F0} tokens/s, {flops / seconds / 1e9:F1} GFLOP/s, MFU {mfu:F2}");
        }
        r["memory_gbps"] = MemoryGbps();
        log.WriteLine($"bench: memory read bandwidth {r["memory_gbps"]:F1} GB/s");
        GenerateFigures(r, limit, quick, log);
        RealShapeFigures(r, limit, quick, log);
        LlamaCppFigures(r, log);
        PpoFigures(r, quick ? 3 : 5, quick ? 20 : 100, log);
        BesideCopyFigures(r, quick ? 4 : 8, startSelf, log);
        LoraFigures(r, quick ? 2 : 3, startSelf, log);
        r["peak_rss_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
        (r["gemm_gflops"], r["gemm_gflops_min"], r["gemm_gflops_max"]) = (Median(limit.Gemms), limit.Gemms.Min(), limit.Gemms.Max());
        (r["train_tokens_per_second"], r["train_mfu"]) = (r["train_tokens_per_second_d256"], r["train_mfu_d256"]);
        (r["generate_tokens_per_second"], r["generate_mfu"]) = (r["generate_tokens_per_second_b64"], r["generate_mfu_b64"]);
        log.WriteLine($"bench: GEMM {r["gemm_gflops"]:F1} GFLOP/s (median; {r["gemm_gflops_min"]:F1} to {r["gemm_gflops_max"]:F1}); train MFU {r["train_mfu"]:F2} (d 256), {r["train_mfu_d512"]:F2} (d 512); "
            + $"generate MFU {r["generate_mfu"]:F3} (batch 64), {r["generate_mfu_b1"]:F3} (batch 1)");
        return r;
    }

    /// <summary>
    /// This host's throughput drifts by up to 2x within minutes (other tenants), so every MFU is the median of paired
    /// ratios: a workload's FLOP/s over the GEMM FLOP/s measured just before it. gemm_gflops is the median of those GEMMs.
    /// </summary>
    private sealed class PairedLimit(ScalarType dtype = ScalarType.Float32)
    {
        public List<double> Gemms { get; } = [];

        /// <summary>The dtype of its GEMMs: fp32, or bf16 for the bf16 workloads' MFU.</summary>
        public ScalarType Dtype => dtype;

        /// <summary>Median seconds and median MFU over <paramref name="pairs"/> (GEMM, workload) pairs.</summary>
        public (double Seconds, double Mfu) Measure(Func<double> seconds, double flops, int pairs)
        {
            var runs = Enumerable.Range(0, pairs).Select(_ =>
            {
                Gemms.Add(Gemm(1024, 5, warmSeconds: 0.05, dtype: dtype));
                double t = seconds();
                return (Seconds: t, Mfu: flops / t / 1e9 / Gemms[^1]);
            }).ToList();
            return (Median(runs.Select(x => x.Seconds).ToList()), Median(runs.Select(x => x.Mfu).ToList()));
        }
    }

    /// <summary>Generation at batch 1 and 64 (tokens/s, MFU, bytes read per second), the KV cache's speed-up and the time scaling.</summary>
    private static void GenerateFigures(Dictionary<string, object> r, PairedLimit limit, bool quick, TextWriter log)
    {
        var gen = GenerateModel();
        long n = MatmulParameters(gen);
        foreach (int b in new[] { 1, 64 })
        {
            double flops = b * 256 * GenerateFlopsPerToken(n, gen.Config, PromptTokens + 128);
            var (seconds, mfu) = limit.Measure(() => Generate(gen, b, 256, true), flops, 3);
            double gbps = GenerateBytesPerStep(n, gen.Config, b, PromptTokens + 128) * 256 / seconds / 1e9;
            (r[$"generate_tokens_per_second_b{b}"], r[$"generate_mfu_b{b}"]) = (b * 256 / seconds, mfu);
            (r[$"generate_gbps_b{b}"], r[$"generate_bandwidth_fraction_b{b}"]) = (gbps, gbps / (double)r["memory_gbps"]);
            log.WriteLine($"bench: generate batch {b}, 256 new tokens: {seconds:F2} s, {b * 256 / seconds:F0} tokens/s, MFU {mfu:F3}, {gbps:F1} GB/s read");
        }
        // Ratios of times come from back-to-back pairs too (median of the pair ratios).
        int speedupTokens = quick ? 128 : 256;
        r["kv_cache_speedup"] = PairedRatio(() => Generate(gen, 1, speedupTokens, false), () => Generate(gen, 1, speedupTokens, true), 3);
        r["kv_cache_speedup_tokens"] = speedupTokens;
        r["generate_time_scaling"] = PairedRatio(() => Generate(gen, 1, 512, true), () => Generate(gen, 1, 256, true), 5);
        r["generate_time_scaling_b64"] = PairedRatio(() => Generate(gen, 64, 512, true), () => Generate(gen, 64, 256, true), quick ? 1 : 3);
        log.WriteLine($"bench: batch 1: KV cache speed-up {r["kv_cache_speedup"]:F1}x at {speedupTokens} tokens; 512 vs 256 new tokens: {r["generate_time_scaling"]:F2}x the time "
            + $"(batch 64: {r["generate_time_scaling_b64"]:F2}x, attention over the longer cache)");
    }

    /// <summary>The figures as a two-column table.</summary>
    public static void Print(Dictionary<string, object> figures, TextWriter log)
    {
        var table = new Spectre.Console.Table().AddColumn("figure").AddColumn(new Spectre.Console.TableColumn("value").RightAligned());
        foreach (var (key, value) in figures)
            table.AddRow(key, value is double d ? d.ToString(Math.Abs(d) >= 100 ? "F0" : "F3", System.Globalization.CultureInfo.InvariantCulture) : value?.ToString() ?? "-");   // null: not measurable here (bf16 rows without AVX512-BF16)
        Reporting.Consoles.For(log).Write(table);
    }

    /// <summary>Median GFLOP/s of an (m x k) by (k x n) fp32 matmul, after half a second of warm-up (threads, caches, clock).</summary>
    private static double Gemm(int m, int repeats, int? k = null, int? n = null, double warmSeconds = 0.5, ScalarType dtype = ScalarType.Float32)
    {
        using var scope = NewDisposeScope();
        var a = randn(m, k ?? m).to(dtype);
        var b = randn(k ?? m, n ?? m).to(dtype);
        double flops = 2.0 * m * (k ?? m) * (n ?? m);
        for (var warm = Stopwatch.StartNew(); warm.Elapsed.TotalSeconds < warmSeconds;) a.matmul(b).Dispose();
        var times = Enumerable.Range(0, repeats).Select(_ => Time(() => a.matmul(b).Dispose())).ToList();
        return flops / Median(times) / 1e9;
    }

    private const int TrainTokens = 16 * 128;

    /// <summary>
    /// Forward + backward + AdamW on a 4-layer model, vocabulary 512, batch 16 x 128: one warm-up step, then
    /// <paramref name="measure"/> times the step (given the step and its FLOPs); returns its figures and the step's FLOPs.
    /// </summary>
    private static (double Seconds, double Mfu, double Flops) Train(int d, Func<Func<double>, double, (double Seconds, double Mfu)> measure)
    {
        manual_seed(0);
        var config = new DecoderSpec(512, 128, 4, d / 64, d);
        using var model = new Decoder(config);
        var (step, optimizer) = TrainStep(model, 16, 128);
        using var _ = optimizer;
        double flops = TrainTokens * TrainFlopsPerToken(MatmulParameters(model), config, 128);
        var (seconds, mfu) = measure(step, flops);
        return (seconds, mfu, flops);
    }

    /// <summary>A timed forward + backward + AdamW step (the trainers' <see cref="Training.LeanAdamW"/>) on random ids (batch, length), after one warm-up step; and its optimizer, to dispose.</summary>
    private static (Func<double> Step, IDisposable Optimizer) TrainStep(Decoder model, int batch, int length)
    {
        model.train();
        var optimizer = Training.Optimization.AdamW(model, lr: 1e-5, weightDecay: 0.1, beta1: 0.9, beta2: 0.99);   // the trainers' optimizer
        var ids = randint(0, model.Config.VocabSize, [batch, length]);               // (B, T)
        var targets = ids.roll(-1, 1);
        double Step() => Time(() =>
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            Training.SftTrainer.Loss(model, ids, targets).backward();                // the trainers' loss: chunked LM head, the model's bf16 and checkpointing settings
            optimizer.step();
        });
        Step();
        return (Step, optimizer);
    }

    private static Decoder GenerateModel()
    {
        manual_seed(0);
        var model = new Decoder(new DecoderSpec(512, 640, 4, 4, 256));
        model.eval();
        return model;
    }

    private const int PromptTokens = 16;

    /// <summary>Seconds to sample <paramref name="newTokens"/> tokens for a batch of 16-token prompts (EOS never ends a row early).</summary>
    private static double Generate(Decoder model, int batch, int newTokens, bool cache)
    {
        using var scope = NewDisposeScope();
        var special = new SpecialTokenIds(0, []);                           // no EOS: every row runs to the cap
        var prompts = randint(4, 512, [batch, PromptTokens]);
        var mask = ones(batch, PromptTokens, ScalarType.Bool);
        return Time(() => Sampling.Generate(model, prompts, mask, new SamplingOptions(newTokens), special, new Generator(1), cache).Dispose());
    }

    /// <summary>Median GB/s of reading a 256 MB tensor (a sum: one pass, nothing written), the bound for a decode step.</summary>
    private static double MemoryGbps()
    {
        using var scope = NewDisposeScope();
        var x = ones(64L << 20);
        x.sum().Dispose();
        return x.numel() * 4.0 / Median(Enumerable.Range(0, 9).Select(_ => Time(() => x.sum().Dispose())).ToList()) / 1e9;
    }

    /// <summary>PPO iteration time and phase shares on the sort task (default model), then RSS and live-tensor growth over a soak.</summary>
    private static void PpoFigures(Dictionary<string, object> r, int iterations, int soak, TextWriter log)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{Environment.ProcessId}");
        try
        {
            var prompts = PpoSetup(dir);
            var timing = new PpoConfig { Iterations = iterations, CheckpointEvery = 1000 };
            var rows = RunPpo(dir, "timing", prompts, timing);
            double total = IterationSeconds(rows);
            r["ppo_iteration_seconds"] = total;
            PhaseShares(r, "ppo", rows);
            log.WriteLine($"bench: PPO iteration (batch 64, 16 new tokens, d_model 128): {total:F2} s; generate {r["ppo_share_generate"]:P0}, "
                + $"reference + critic + old log-probs {r["ppo_share_forward"]:P0}, reward {r["ppo_share_reward"]:P0}, update {r["ppo_share_update"]:P0}");
            GrpoFigures(r, dir, prompts, timing, rows, log);

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

    /// <summary>The sort task's data and a fresh default model in <paramref name="dir"/>/init; returns the prompts.</summary>
    private static IReadOnlyList<PromptRecord> PpoSetup(string dir)
    {
        TaskData.Write(new SortLettersTask(), dir, 1000, 10, 0, 1);
        var prompts = Jsonl.ReadPrompts(Path.Combine(dir, TaskData.PromptsFile)).Records;
        var tokenizer = SftTrainer.NewTokenizer(TokenizerKind.Char, Jsonl.ReadChat(Path.Combine(dir, TaskData.SftFile)).Records);
        manual_seed(0);
        var model = new Decoder(new SftConfig().ModelConfig(tokenizer.VocabSize));
        RunDirectory.SavePolicy(Path.Combine(dir, "init"), model, tokenizer, new SftConfig());
        return prompts;
    }

    /// <summary>Median seconds of a PPO or GRPO iteration (rollout + update), the first (warm-up) iteration left out.</summary>
    private static double IterationSeconds(List<Dictionary<string, System.Text.Json.JsonElement>> rows) =>
        Median(rows.Skip(1).Select(x => x["rollout_seconds"].GetDouble() + x["update_seconds"].GetDouble()).ToList());

    /// <summary>Median of a logged value over the iterations after the first (warm-up) one.</summary>
    private static double MedianAfterFirst(List<Dictionary<string, System.Text.Json.JsonElement>> rows, string key) =>
        Median(rows.Skip(1).Select(x => x[key].GetDouble()).ToList());

    /// <summary>
    /// <c>{prefix}_share_{phase}</c>: each phase's median seconds over the median iteration seconds (generate: sampling;
    /// forward: old log-probs, reference and critic where there are ones; reward; update: every epoch's minibatches).
    /// </summary>
    private static void PhaseShares(Dictionary<string, object> r, string prefix, List<Dictionary<string, System.Text.Json.JsonElement>> rows)
    {
        double total = IterationSeconds(rows);
        foreach (var phase in new[] { "generate", "forward", "reward", "update" })
            r[$"{prefix}_share_{phase}"] = MedianAfterFirst(rows, $"{phase}_seconds") / total;
    }

    private static List<Dictionary<string, System.Text.Json.JsonElement>> RunPpo(string dir, string name, IReadOnlyList<PromptRecord> prompts, PpoConfig config, bool trackRss = false) =>
        RunTrainer(dir, name, init => PpoTrainer.FromRunDirectory(init, new EditDistance(), prompts, config, TextWriter.Null), trackRss);

    /// <summary>
    /// Trains the trainer <paramref name="create"/> makes from <paramref name="dir"/>/init (PPO or critic-free) into
    /// <paramref name="dir"/>/<paramref name="name"/>, with edit distance as the reward; returns its metrics rows.
    /// </summary>
    private static List<Dictionary<string, System.Text.Json.JsonElement>> RunTrainer(string dir, string name, Func<string, PpoTrainer> create, bool trackRss = false)
    {
        using var trainer = create(Path.Combine(dir, "init"));
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

    /// <summary>Median over <paramref name="pairs"/> back-to-back runs of numerator() / denominator().</summary>
    private static double PairedRatio(Func<double> numerator, Func<double> denominator, int pairs) =>
        Median(Enumerable.Range(0, pairs).Select(_ => numerator() / denominator()).ToList());

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}
