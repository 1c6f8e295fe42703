using System.Diagnostics;
using PpoSharp.Models;
using TorchSharp;
using PpoSharp.Text;
using static TorchSharp.torch;

namespace PpoSharp.Benchmarks;

/// <summary>Training and generation at a real model's shape (SmolLM2-135M's, random weights): what a user of a pretrained model gets on this machine.</summary>
public static partial class Bench
{
    /// <summary>SmolLM2-135M: 30 layers, hidden 576, 9 heads, 3 key/value heads, SwiGLU 1536, vocabulary 49152, tied head, RoPE, RMSNorm.</summary>
    public static DecoderSpec SmolLm2Shape => new(49152, 8192, 30, 9, 576)
    {
        KvHeads = 3, Intermediate = 1536, Norm = NormKind.RmsNorm, Positions = PositionKind.Rope, RopeTheta = 100000, Mlp = MlpKind.SwiGlu,
        QkvBias = false, OutBias = false, MlpBias = false, TiedHead = true,
    };

    /// <summary>Whether the CPU has AVX512-BF16 or AMX (bf16 matmuls are fast only then; on AVX2 libtorch's bf16 is far slower than fp32).</summary>
    public static bool CpuHasBf16 => ComputeDtypes.CpuHasBf16;

    private static void RealShapeFigures(Dictionary<string, object> r, PairedLimit limit, bool quick, TextWriter log)
    {
        manual_seed(0);
        using var model = new Decoder(SmolLm2Shape);
        long n = MatmulParameters(model);
        r["smollm2_parameters"] = model.parameters().Sum(p => p.numel());
        r["smollm2_weights_mb"] = model.parameters().Sum(p => p.numel() * p.element_size()) / 1048576.0;   // fp32; AdamW keeps two more copies
        double trainFlops = RealTrainTokens * TrainFlopsPerToken(n, model.Config, 128);
        var (step, optimizer) = TrainStep(model, 4, 128);
        var (trainSeconds, trainMfu) = limit.Measure(step, trainFlops, TrainPairs(quick));
        optimizer.Dispose();
        (r["smollm2_train_tokens_per_second"], r["smollm2_train_mfu"]) = (RealTrainTokens / trainSeconds, trainMfu);
        log.WriteLine($"bench: SmolLM2-135M shape, train batch 4 x 128: {RealTrainTokens / trainSeconds:F0} tokens/s, MFU {trainMfu:F2}");
        model.eval();
        DecodeFigures(r, model, n, limit, quick, log);
        model.train();
        TrainVariant(r, model, "checkpointing", m => m.GradientCheckpointing = true, trainFlops, limit, quick, log);
        r["smollm2_bf16"] = CpuHasBf16;
        (r["smollm2_train_tokens_per_second_bf16"], r["smollm2_train_mfu_bf16"]) = (null!, null!);
        if (!CpuHasBf16) log.WriteLine("bench: bf16 training not timed: this CPU has no AVX512-BF16 or AMX (libtorch's bf16 matmuls are far slower than fp32 here)");
        else
        {
            var bf16 = new PairedLimit(ScalarType.BFloat16);                                  // MFU against a bf16 GEMM timed just before each step
            TrainVariant(r, model, "bf16", m => m.MatmulDtype = ScalarType.BFloat16, trainFlops, bf16, quick, log);
            r["gemm_gflops_bf16"] = Median([(double)r["gemm_gflops_bf16"], .. bf16.Gemms]);   // with the one at the run's start
            model.eval();
            model.to(ScalarType.BFloat16);
            double seconds = RealGenerate(model, 16);
            r["smollm2_generate_tokens_per_second_b16_bf16"] = 16 * RealNewTokens / seconds;
            log.WriteLine($"bench: SmolLM2-135M shape, bf16 generate batch 16: {16 * RealNewTokens / seconds:F1} tokens/s");
            Bf16DecodeSteps(r, model, quick, log);
        }
        r["smollm2_peak_rss_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0;
    }

    private const int RealTrainTokens = 4 * 128, RealNewTokens = 32;

    /// <summary>Timed SFT steps at this shape, each after its GEMM: the median of three (five in a full run), as one step drifted by 10-20% from the next.</summary>
    private static int TrainPairs(bool quick) => quick ? 3 : 5;

    /// <summary>
    /// Decode at batch 1 and 16, after one warm-up generation at batch 1 (the first pays one-off costs: the KV cache's and
    /// the products' buffers, the helper thread, the JIT's tiers; it ran at 35-42 tokens/s where the next ones ran 53-58).
    /// Batch 1 is the median of several rounds. Each round measures the bandwidth, then generates 32 tokens (the
    /// end-to-end figure, the 16-token prompt's prefill included), then 8 and 40: the difference of the last two is
    /// 32 decode steps alone, the figure the roofline (weight bytes per token over bandwidth) bounds. The fraction divides
    /// by the run's bandwidth (memory_gbps, measured first); the paired fraction by each round's own. On this shared
    /// virtual machine the two differ: the bandwidth read 33 GB/s at a run's start and 48-58 in its rounds, where the
    /// decode's own weights streamed at 29-33.
    /// </summary>
    private static void DecodeFigures(Dictionary<string, object> r, Decoder model, long n, PairedLimit limit, bool quick, TextWriter log)
    {
        RealGenerate(model, 1);
        var rounds = Enumerable.Range(0, quick ? 3 : 5).Select(_ =>
        {
            double gbps = MemoryGbps(), seconds = RealGenerate(model, 1);
            return (Gbps: gbps, Seconds: seconds, Step: DecodeStepSeconds(model));
        }).ToList();
        double seconds = Median(rounds.Select(x => x.Seconds).ToList());
        r["smollm2_generate_tokens_per_second_b1"] = RealNewTokens / seconds;
        r["smollm2_generate_mfu_b1"] = RealNewTokens * GenerateFlopsPerToken(n, model.Config, PromptTokens + RealNewTokens / 2.0) / seconds / 1e9 / Median(limit.Gemms);   // the run's GEMM so far
        log.WriteLine($"bench: SmolLM2-135M shape, generate batch 1, {RealNewTokens} new tokens: {RealNewTokens / seconds:F1} tokens/s with the prompt's prefill (median of {rounds.Count})");
        DecodeSteps(r, rounds.Where(x => x.Step > 0).Select(x => (x.Gbps, x.Step)).ToList(), log);   // a difference of two timings: a stall can make it negative
        double flops = 16 * RealNewTokens * GenerateFlopsPerToken(n, model.Config, PromptTokens + RealNewTokens / 2.0);
        var (b16, mfu) = limit.Measure(() => RealGenerate(model, 16), flops, quick ? 1 : 2);
        (r["smollm2_generate_tokens_per_second_b16"], r["smollm2_generate_mfu_b16"]) = (16 * RealNewTokens / b16, mfu);
        log.WriteLine($"bench: SmolLM2-135M shape, generate batch 16, {RealNewTokens} new tokens: {16 * RealNewTokens / b16:F1} tokens/s, MFU {mfu:F3}");
    }

    /// <summary>Seconds of one batch-1 decode step alone: a 40-token generation less an 8-token one, over 32 (negative if a stall hit the shorter one).</summary>
    private static double DecodeStepSeconds(Decoder model) => (RealGenerate(model, 1, 40) - RealGenerate(model, 1, 8)) / 32;

    /// <summary>Batch-1 decode steps alone with bf16 weights (after a warm-up), and their speed-up over fp32's; null where not measured.</summary>
    private static void Bf16DecodeSteps(Dictionary<string, object> r, Decoder model, bool quick, TextWriter log)
    {
        RealGenerate(model, 1);
        var steps = Enumerable.Range(0, quick ? 3 : 5).Select(_ => DecodeStepSeconds(model)).Where(x => x > 0).ToList();
        r["smollm2_decode_b1_tokens_per_second_bf16"] = steps.Count == 0 ? null! : 1 / Median(steps);
        r["smollm2_decode_b1_bf16_step_speedup"] = steps.Count == 0 || r["smollm2_decode_b1_tokens_per_second"] is not double fp32 ? null! : 1 / Median(steps) / fp32;
        if (r["smollm2_decode_b1_bf16_step_speedup"] is double speedup)
            log.WriteLine($"bench: SmolLM2-135M shape, batch-1 decode with bf16 weights {1 / Median(steps):F1} steps/s alone, {speedup:F2}x fp32's");
    }

    /// <summary>Batch-1 decode steps alone and their roofline fractions from (bandwidth, seconds a step) rounds; null where no round gave a positive step time.</summary>
    private static void DecodeSteps(Dictionary<string, object> r, List<(double Gbps, double Step)> rounds, TextWriter log)
    {
        string[] keys = ["smollm2_decode_b1_tokens_per_second", "smollm2_decode_b1_memory_gbps", "smollm2_decode_b1_roofline_fraction", "smollm2_decode_b1_roofline_fraction_paired"];
        foreach (var key in keys) r[key] = null!;
        if (rounds.Count == 0)
        {
            log.WriteLine("bench: batch-1 decode steps not measured: every round timed 8 new tokens no faster than 40 (a busy host)");
            return;
        }
        double bytes = (double)r["smollm2_weights_mb"] * 1048576, step = Median(rounds.Select(x => x.Step).ToList());
        r[keys[0]] = 1 / step;
        r[keys[1]] = Median(rounds.Select(x => x.Gbps).ToList());
        r[keys[2]] = bytes / step / ((double)r["memory_gbps"] * 1e9);
        r[keys[3]] = Median(rounds.Select(x => bytes / x.Step / (x.Gbps * 1e9)).ToList());
        log.WriteLine($"bench: SmolLM2-135M shape, batch-1 decode {1 / step:F1} steps/s alone, {r[keys[2]]:P0} of the bandwidth roofline (weight bytes / step time / "
            + $"the run's bandwidth, {r["memory_gbps"]:F1} GB/s); {r[keys[3]]:P0} against the bandwidth measured in each round (median {r[keys[1]]:F1} GB/s)");
    }

    /// <summary>The SFT step at SmolLM2's shape once more with <paramref name="set"/> applied to the model (then undone): tokens/s and MFU under smollm2_train_*_{name}.</summary>
    private static void TrainVariant(Dictionary<string, object> r, Decoder model, string name, Action<Decoder> set, double flops, PairedLimit limit, bool quick, TextWriter log)
    {
        set(model);
        var (step, optimizer) = TrainStep(model, 4, 128);
        var (seconds, mfu) = limit.Measure(step, flops, TrainPairs(quick));
        optimizer.Dispose();
        (model.GradientCheckpointing, model.MatmulDtype) = (false, null);
        (r[$"smollm2_train_tokens_per_second_{name}"], r[$"smollm2_train_mfu_{name}"]) = (RealTrainTokens / seconds, mfu);
        log.WriteLine($"bench: SmolLM2-135M shape, train batch 4 x 128 with {name}: {RealTrainTokens / seconds:F0} tokens/s, MFU {mfu:F2} ({(limit.Dtype == ScalarType.BFloat16 ? "bf16" : "fp32")} GEMM)");
    }

    /// <summary>Seconds to sample <paramref name="newTokens"/> tokens after 16-token prompts.</summary>
    private static double RealGenerate(Decoder model, int batch, int newTokens = RealNewTokens)
    {
        using var scope = NewDisposeScope();
        var prompts = randint(0, model.Config.VocabSize, [batch, PromptTokens]);
        var mask = ones(batch, PromptTokens, ScalarType.Bool);
        return Time(() => Sampling.Generate(model, prompts, mask, new SamplingOptions(newTokens), new SpecialTokenIds(0, []), new Generator(1)).Dispose());
    }
}
