using System.Text.Json.Nodes;
using PpoSharp.Data;
using PpoSharp.Export;
using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// GGUF export judged by llama.cpp itself (the build inside LLamaSharp.Backend.Cpu 0.30.0): each fixture is exported,
/// loaded by llama.cpp, and its logits and greedy continuations are compared with PpoSharp's on the same token ids.
/// </summary>
public class GgufTests
{
    public static TheoryData<string> Fixtures => new() { "tiny-llama3", "tiny-gpt2", "tiny-qwen2", "tiny-qwen3", "tiny-mistral" };

    /// <summary>fp32 agreement: the Llama family to 1e-4; GPT-2 to 5e-3, because ggml computes GELU through an fp16 lookup table.</summary>
    private static double F32Tolerance(string name) => name == "tiny-gpt2" ? 5e-3 : 1e-4;

    private static readonly Dictionary<string, (string Dir, Decoder Model, List<int[]> Sequences, int[] Prompt)> Loaded = [];

    private static (string Dir, Decoder Model, List<int[]> Sequences, int[] Prompt) Fixture(string name)
    {
        lock (Loaded)
        {
            if (Loaded.TryGetValue(name, out var f)) return f;
            var dir = TestSupport.HfModel(name);
            var e = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
            var sequences = e["sequences"]!.AsArray().Select(s => HfTestData.Ints(s!["input_ids"])).ToList();
            var model = RunDirectory.LoadPolicyModel(dir);
            model.eval();
            return Loaded[name] = (dir, model, sequences, HfTestData.Ints(e["greedy"]!["prompt_ids"]));
        }
    }

    private static string Export(string dir, GgufOutType type)
    {
        var path = Path.Combine(TestSupport.TempDir(), $"model-{GgufExport.OptionName(type)}.gguf");
        GgufExport.Run(dir, path, type);
        return path;
    }

    private static float[][] OurLogits(Decoder model, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var logits = model.forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]))[0].to(ScalarType.Float32);  // (T, V)
        return Enumerable.Range(0, ids.Length).Select(t => logits[t].data<float>().ToArray()).ToArray();
    }

    private static int[] OurGreedy(Decoder model, int[] prompt, int n)
    {
        var (ids, mask) = Sampling.LeftPad([prompt], pad: 0);
        using var g = Sampling.Generate(model, ids, mask, new SamplingOptions(n, Greedy: true), new SpecialTokenIds(0, []));
        return g.Responses.data<long>().Select(i => (int)i).ToArray();
    }

    /// <summary>Largest |ours - llama.cpp| over every logit of every position, and the share of positions whose argmax agrees.</summary>
    private static (double MaxDiff, double ArgmaxAgreement) Compare(Decoder model, string gguf, List<int[]> sequences)
    {
        using var cpp = new LlamaCpp(gguf, contextSize: 128);
        double max = 0;
        int agree = 0, total = 0;
        foreach (var ids in sequences)
        {
            var ours = OurLogits(model, ids);
            var theirs = cpp.Logits(ids);
            for (int t = 0; t < ids.Length; t++)
            {
                Assert.Equal(ours[t].Length, theirs[t].Length);
                for (int v = 0; v < ours[t].Length; v++) max = Math.Max(max, Math.Abs(ours[t][v] - theirs[t][v]));
                agree += LlamaCpp.ArgMax(ours[t]) == LlamaCpp.ArgMax(theirs[t]) ? 1 : 0;
                total++;
            }
        }
        return (max, (double)agree / total);
    }

    [Theory, MemberData(nameof(Fixtures))]
    public void ExportF32_LlamaCppLogitsAtEveryPosition_MatchOurs(string name)
    {
        var (dir, model, sequences, _) = Fixture(name);
        var (max, agreement) = Compare(model, Export(dir, GgufOutType.F32), sequences);
        Assert.True(max <= F32Tolerance(name), $"{name}: largest logit difference {max:E2} > {F32Tolerance(name):E0}");
        Assert.Equal(1.0, agreement);
    }

    [Theory, MemberData(nameof(Fixtures))]
    public void ExportF32_LlamaCppGreedyContinuation_IsOurs(string name)
    {
        var (dir, model, _, prompt) = Fixture(name);
        using var cpp = new LlamaCpp(Export(dir, GgufOutType.F32), contextSize: 128);
        Assert.Equal(OurGreedy(model, prompt, 16), cpp.Greedy([prompt], 16)[0]);
    }

    /// <summary>
    /// Reduced precision, judged against our fp32 logits: llama.cpp rounds the weights, and for F16/BF16 also the
    /// activations fed to each matrix product, so the error is the format's relative precision (F16 2^-11, BF16 2^-8,
    /// Q8_0 half a step of max|block| / 127) accumulated through two layers: bounds 0.05 (F16), 0.5 (BF16), 0.15 (Q8_0).
    /// </summary>
    [Theory]
    [InlineData("tiny-llama3", GgufOutType.F16, 0.05)]
    [InlineData("tiny-llama3", GgufOutType.Bf16, 0.5)]
    [InlineData("tiny-llama3", GgufOutType.Q8_0, 0.15)]
    [InlineData("tiny-gpt2", GgufOutType.F16, 0.05)]
    [InlineData("tiny-gpt2", GgufOutType.Bf16, 0.5)]
    [InlineData("tiny-gpt2", GgufOutType.Q8_0, 0.15)]
    [InlineData("tiny-qwen3", GgufOutType.Q8_0, 0.15)]
    public void ExportReducedPrecision_LlamaCppArgmax_AgreesOnAtLeast90Percent(string name, GgufOutType type, double tolerance)
    {
        var (dir, model, sequences, _) = Fixture(name);
        var (max, agreement) = Compare(model, Export(dir, type), sequences);
        Assert.True(agreement >= 0.9, $"{name} {type}: argmax agrees on {agreement:P0} of positions");
        Assert.True(max <= tolerance, $"{name} {type}: largest logit difference {max:F3} > {tolerance}");
    }
}
