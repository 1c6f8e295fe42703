using PpoSharp.Export;
using PpoSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Benchmarks;

/// <summary>
/// PpoSharp's generation beside llama.cpp's (the build inside LLamaSharp.Backend.Cpu) on the same SmolLM2-135M-shaped
/// random model, exported to GGUF, in the same run: 16-token prompts, 32 new tokens, batch 1 and 16 sequences, F32
/// and BF16 weights. The ratio PpoSharp / llama.cpp tokens/s is the figure to improve (below 1: llama.cpp is faster).
/// </summary>
public static partial class Bench
{
    private static void LlamaCppFigures(Dictionary<string, object> r, TextWriter log)
    {
        manual_seed(0);
        using var model = new Decoder(SmolLm2Shape, new Models.Hf.HfModelInfo(new Models.Hf.Llama(), false, [], ScalarType.Float32));   // written as llama
        model.eval();
        var dir = Path.Combine(Path.GetTempPath(), $"ppo-sharp-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var (type, suffix) in new[] { (GgufOutType.F32, ""), (GgufOutType.Bf16, "_bf16") })
            {
                if (type == GgufOutType.Bf16 && !CpuHasBf16)
                {
                    log.WriteLine("bench: llama.cpp vs PpoSharp in bf16 skipped: this CPU has no AVX512-BF16 (libtorch's bf16 is slow here)");
                    continue;
                }
                var path = Path.Combine(dir, $"smollm2{suffix}.gguf");
                GgufExport.Write(model, null, path, type, "smollm2-135m-shape");
                if (type == GgufOutType.Bf16) model.to(ScalarType.BFloat16);
                RealGenerate(model, 1);                                                  // warm-up: the first generation pays one-off costs
                foreach (int b in new[] { 1, 16 })
                {
                    // Three back-to-back pairs (one run of each moved by up to 25%): the median of each side and of the pair ratios.
                    var pairs = Enumerable.Range(0, 3).Select(_ => (Ours: b * RealNewTokens / RealGenerate(model, b), Theirs: LlamaCppTokensPerSecond(path, b))).ToList();
                    double ours = Median(pairs.Select(p => p.Ours).ToList()), theirs = Median(pairs.Select(p => p.Theirs).ToList());
                    (r[$"smollm2_ours_tokens_per_second_b{b}{suffix}"], r[$"smollm2_llamacpp_tokens_per_second_b{b}{suffix}"]) = (ours, theirs);
                    r[$"smollm2_generate_ratio_to_llamacpp_b{b}{suffix}"] = Median(pairs.Select(p => p.Ours / p.Theirs).ToList());
                    log.WriteLine($"bench: SmolLM2-135M shape {GgufExport.OptionName(type)}, batch {b}: PpoSharp {ours:F1} tokens/s, llama.cpp {theirs:F1} tokens/s, ratio {r[$"smollm2_generate_ratio_to_llamacpp_b{b}{suffix}"]:F2}");
                }
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
        if (r.TryGetValue("smollm2_ours_tokens_per_second_b1_bf16", out var bf16))
        {
            r["smollm2_decode_b1_bf16_speedup"] = (double)bf16 / (double)r["smollm2_ours_tokens_per_second_b1"];   // both warm, minutes apart
            log.WriteLine($"bench: SmolLM2-135M shape, batch-1 decode with bf16 weights: {r["smollm2_decode_b1_bf16_speedup"]:F2}x fp32's tokens/s");
        }
    }

    /// <summary>llama.cpp's greedy tokens/s for <paramref name="batch"/> random 16-token prompts (one sequence each), load time excluded.</summary>
    private static double LlamaCppTokensPerSecond(string path, int batch)
    {
        using var cpp = new LlamaCpp(path, contextSize: batch * 64, sequences: batch, threads: CpuThreads.Budget, exact: false);
        var random = new Random(1);
        var prompts = Enumerable.Range(0, batch).Select(_ => (IReadOnlyList<int>)Enumerable.Range(0, PromptTokens).Select(_ => random.Next(SmolLm2Shape.VocabSize)).ToArray()).ToList();
        return batch * RealNewTokens / Time(() => cpp.Greedy(prompts, RealNewTokens));
    }
}
