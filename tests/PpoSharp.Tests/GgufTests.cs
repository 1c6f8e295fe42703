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

    /// <summary>
    /// fp32 agreement: the Llama family to 1e-4 (measured 5e-6 to 2.6e-5); GPT-2 to 7e-3 (measured 6.07e-3 over its 50,257
    /// logits a position), because ggml computes GELU through a table of fp16 inputs and outputs: <see cref="GgufGpt2GeluTests"/>
    /// shows that this table is the whole difference.
    /// </summary>
    private static double F32Tolerance(string name) => name == "tiny-gpt2" ? 7e-3 : 1e-4;

    private static readonly Dictionary<string, (string Dir, Decoder Model, List<int[]> Sequences, int[] Prompt)> Loaded = [];

    internal static (string Dir, Decoder Model, List<int[]> Sequences, int[] Prompt) Fixture(string name)
    {
        lock (Loaded)
        {
            if (Loaded.TryGetValue(name, out var f)) return f;
            var dir = TestSupport.HfModel(name, shared: true);      // GgufGpt2GeluTests uses it too
            var e = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
            var sequences = e["sequences"]!.AsArray().Select(s => HfTestData.Ints(s!["input_ids"])).ToList();
            var model = RunDirectory.LoadPolicyModel(dir);
            model.eval();
            return Loaded[name] = (dir, model, sequences, HfTestData.Ints(e["greedy"]!["prompt_ids"]));
        }
    }

    internal static string Export(string dir, GgufOutType type)
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
    /// Reduced precision, judged against our fp32 logits: llama.cpp rounds the weights, and for F16/BF16 it also rounds the
    /// activations fed to each matrix product (for Q8_0 it quantises them to Q8_0 blocks), so the error is the format's
    /// relative precision -- F16 2^-11, BF16 2^-8, Q8_0 half a step of max|block| / 127 -- accumulated through two layers
    /// and maximised over every logit: bounds 0.05 (F16), 0.5 (BF16 and Q8_0). Measured (2026-12-07): F16 0.005-0.025,
    /// BF16 0.04-0.44, Q8_0 0.22-0.44. tiny-llama3 in Q8_0 is left out: 2.2 and 85% agreement there (see the README).
    /// </summary>
    public static TheoryData<string, GgufOutType, double> ReducedPrecision()
    {
        var data = new TheoryData<string, GgufOutType, double>();
        foreach (var name in new[] { "tiny-llama3", "tiny-gpt2", "tiny-qwen2", "tiny-qwen3", "tiny-mistral" })
        {
            data.Add(name, GgufOutType.F16, 0.05);
            data.Add(name, GgufOutType.Bf16, 0.5);
            if (name != "tiny-llama3") data.Add(name, GgufOutType.Q8_0, 0.5);
        }
        return data;
    }

    [Theory, MemberData(nameof(ReducedPrecision))]
    public void ExportReducedPrecision_LlamaCppArgmax_AgreesOnAtLeast90Percent(string name, GgufOutType type, double tolerance)
    {
        var (dir, model, sequences, _) = Fixture(name);
        var (max, agreement) = Compare(model, Export(dir, type), sequences);
        Assert.True(agreement >= 0.9, $"{name} {type}: argmax agrees on {agreement:P0} of positions");
        Assert.True(max <= tolerance, $"{name} {type}: largest logit difference {max:F3} > {tolerance}");
    }
}

/// <summary>The built-in sort model, its character tokenizer and the export's byte formats and refusals.</summary>
public class GgufExportTests
{
    private static string SortModel => Path.Combine(TestSupport.TrainedSortModel, "model");

    /// <summary>Greedy answers (stopping at the end token) of PpoSharp and of llama.cpp to the held-out prompts, and each one's exact match.</summary>
    private static (double Ours, double Theirs, int Same) ExactMatch(string gguf, int n) =>
        ExactMatch(SortModel, Path.Combine(TestSupport.TrainedSortModel, "data", "eval.jsonl"), gguf, n);

    internal static (double Ours, double Theirs, int Same) ExactMatch(string modelDir, string evalFile, string gguf, int n)
    {
        var (model, tokenizer) = RunDirectory.LoadPolicy(modelDir);
        model.eval();
        var records = Jsonl.ReadPrompts(evalFile).Records.Take(n).ToList();
        using var cpp = new LlamaCpp(gguf, contextSize: 32 * 8, sequences: 8);
        int ours = 0, theirs = 0, same = 0;
        foreach (var chunk in records.Chunk(8))
        {
            var prompts = chunk.Select(r => (IReadOnlyList<int>)tokenizer.Chat.EncodePrompt(r.Messages)).ToList();
            foreach (var (r, p) in chunk.Zip(prompts))
                Assert.Equal(p, cpp.Tokenize(tokenizer.Chat.Render(r.Messages, addGenerationPrompt: true)));   // llama.cpp reads our text as our ids
            int room = model.Config.ContextLength - prompts.Max(p => p.Count);
            var answers = cpp.Greedy(prompts, room, tokenizer.Special.Eos.ToHashSet());
            var (ids, mask) = Sampling.LeftPad(prompts, tokenizer.Special.Pad);
            using var g = Sampling.Generate(model, ids, mask, new SamplingOptions(room, Greedy: true), tokenizer.Special);
            for (int i = 0; i < chunk.Length; i++)
            {
                var mine = g.Responses[i].data<long>().Select(x => (int)x).Where((_, t) => g.Mask[i, t].item<bool>()).ToList();
                string a = tokenizer.Decode(mine), b = tokenizer.Decode(answers[i]);
                ours += chunk[i].Solutions.Contains(a) ? 1 : 0;
                theirs += chunk[i].Solutions.Contains(b) ? 1 : 0;
                same += a == b ? 1 : 0;
            }
        }
        return ((double)ours / records.Count, (double)theirs / records.Count, same);
    }

    [Fact]
    public void SortModel_F32InLlamaCpp_SameAnswersAndExactMatchAsPpoSharp()
    {
        var path = Path.Combine(TestSupport.TempDir(), "sort.gguf");
        GgufExport.Run(SortModel, path, GgufOutType.F32);
        var (ours, theirs, same) = ExactMatch(path, 48);
        Assert.True(ours > 0.15, $"the trained model should solve some prompts (exact match {ours:P0})");
        Assert.Equal(ours, theirs);
        Assert.True(same >= 46, $"only {same} of 48 answers identical");     // the built-in model's exact GELU vs llama.cpp's tanh one may flip a near-tie
    }

    [Fact]
    public void SortModel_Q8_0InLlamaCpp_ExactMatchWithinOnePointOfPpoSharp()
    {
        var path = Path.Combine(TestSupport.TempDir(), "sort-q8.gguf");
        GgufExport.Run(SortModel, path, GgufOutType.Q8_0);
        var (ours, theirs, _) = ExactMatch(path, 100);
        Assert.InRange(theirs, ours - 0.01, ours + 0.01);
    }

    /// <summary>
    /// One Q8_0 block by hand: max|x| = 127 gives d = 1 (fp16 0x3C00); q = round(x / d) with halves away from zero:
    /// 127 -> 127, -63.5 -> -64 (0xC0), 0.5 -> 1, 1.49 -> 1, zeros stay 0.
    /// </summary>
    [Fact]
    public void Q8_0_OneBlock_ScaleAndRoundedValues()
    {
        var x = new float[32];
        (x[0], x[1], x[2], x[3]) = (127f, -63.5f, 0.5f, 1.49f);
        var bytes = GgmlEncoding.Q8_0(x);
        Assert.Equal(34, bytes.Length);
        Assert.Equal(new byte[] { 0x00, 0x3C, 0x7F, 0xC0, 0x01, 0x01, 0x00 }, bytes[..7]);
        Assert.All(bytes[7..], b => Assert.Equal(0, b));
    }

    /// <summary>bf16 keeps the top 16 bits rounded to nearest even: 1 + 2^-8 (0x3F808000) is a tie to the even 0x3F80; 1 + 3·2^-8 (0x3F818000) a tie up to 0x3F82.</summary>
    [Fact]
    public void ToBf16_Ties_RoundToEven()
    {
        Assert.Equal(0x3F80, GgmlEncoding.ToBf16(1f + 1f / 256));
        Assert.Equal(0x3F82, GgmlEncoding.ToBf16(1f + 3f / 256));
        Assert.Equal(0xBF80, GgmlEncoding.ToBf16(-1f));
    }

    /// <summary>GPT-2's bytes_to_unicode: '!' stands for itself, the space (the 33rd unprintable byte) is U+0120 'Ġ', '\n' (the 11th) U+010A 'Ċ'.</summary>
    [Fact]
    public void ByteToUnicode_GptTwoAlphabet()
    {
        Assert.Equal("!", GgufVocabulary.ByteToUnicode((byte)'!'));
        Assert.Equal("\u0120", GgufVocabulary.ByteToUnicode((byte)' '));
        Assert.Equal("\u010A", GgufVocabulary.ByteToUnicode((byte)'\n'));
    }

    [Fact]
    public void Export_WriteFailsMidway_NothingUnderTheFinalNameOrTemporary()
    {
        var dir = TestSupport.TempDir();
        var path = Path.Combine(dir, "model.gguf");
        var e = Assert.Throws<PpoSharpException>(() => GgufExport.Run(SortModel, path, GgufOutType.F32, open: tmp => new FullDisk(tmp, 4096)));
        Assert.Contains("could not be written (No space left on device); nothing was left under that name", e.Message);
        Assert.Empty(Directory.GetFiles(dir));
    }

    /// <summary>A file stream that fails as a full disk does after <paramref name="room"/> bytes.</summary>
    private sealed class FullDisk(string path, long room) : FileStream(path, FileMode.Create)
    {
        public override void Write(ReadOnlySpan<byte> buffer) { Check(buffer.Length); base.Write(buffer); }
        public override void Write(byte[] buffer, int offset, int count) { Check(count); base.Write(buffer, offset, count); }
        public override void WriteByte(byte value) { Check(1); base.WriteByte(value); }

        private void Check(int n)
        {
            if (Position + n > room) throw new IOException("No space left on device");
        }
    }

    [Fact]
    public void Export_RewardModel_RefusedInOneLine()
    {
        var dir = Path.Combine(TestSupport.TempDir(), "rm");
        var rm = new RewardModel(TestSupport.TinyModel());
        RunDirectory.SaveScalarModel(dir, rm.Backbone, rm.Head, 0, CharTokenizer.FromTexts(["abcdefghijklmn"]), new { });
        var (code, err) = Cli(["export", "--model", dir, "--format", "gguf", "--out", Path.Combine(TestSupport.TempDir(), "rm.gguf")]);
        Assert.Equal(2, code);
        Assert.Contains("holds a reward model or critic (a scalar head), which llama.cpp cannot run", err);
    }

    [Fact]
    public void GgufArchitecture_FamilyLlamaCppLacks_RefusedNamingTheSupported()
    {
        var e = Assert.Throws<PpoSharpException>(() => GgufArchitecture.For(new Gemma()));
        Assert.Equal("architecture GemmaForCausalLM has no GGUF table (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GPT2LMHeadModel)", e.Message);
    }

    private sealed class Gemma : Models.Hf.HfArchitecture
    {
        public override string CausalLm => "GemmaForCausalLM";
        public override string ModelType => "gemma";
        public override string Prefix => "model.";
        public override IReadOnlyList<string> DefaultLoraTargets => [];
        public override DecoderSpec ReadSpec(Models.Hf.HfConfig c) => throw new NotSupportedException();
        public override void WriteSpec(DecoderSpec s, JsonObject config) => throw new NotSupportedException();
        public override IEnumerable<Models.Hf.WeightMap> Backbone(DecoderSpec s) => [];
    }

    [Theory]
    [InlineData("q4_k", "--outtype: 'q4_k' is not supported (allowed: f32, f16, bf16, q8_0)")]
    [InlineData("f32", "does not exist")]
    public void Cli_BadOuttypeOrMissingFolder_OneLineExit2_NothingWritten(string outType, string message)
    {
        var dir = TestSupport.TempDir();
        var path = outType == "f32" ? Path.Combine(dir, "missing", "m.gguf") : Path.Combine(dir, "m.gguf");
        var (code, err) = Cli(["export", "--model", SortModel, "--format", "gguf", "--outtype", outType, "--out", path]);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Empty(Directory.GetFileSystemEntries(dir));
    }

    private static (int Code, string Err) Cli(string[] args)
    {
        var stderr = new StringWriter();
        int code = PpoSharp.Cli.Cli.Run(args, new StringWriter(), stderr);
        return (code, stderr.ToString());
    }
}

/// <summary>The README's LLamaSharp program, run on the exported sort model.</summary>
public class GgufReadmeTests
{
    [Fact]
    public async Task ReadmeLlamaSharpProgram_SortModel_AnswersAsPpoSharp()
    {
        var model = Path.Combine(TestSupport.TrainedSortModel, "model");
        var path = Path.Combine(TestSupport.TempDir(), "ppo.gguf");
        GgufExport.Run(model, path, GgufOutType.F32);
        var (ours, tokenizer) = RunDirectory.LoadPolicy(model);
        var prompt = tokenizer.Chat.EncodePrompt([new ChatMessage(Role.User, "sort: mango")]);
        var (ids, mask) = Sampling.LeftPad([prompt], tokenizer.Special.Pad);
        using var g = Sampling.Generate(ours, ids, mask, new SamplingOptions(16, Greedy: true), tokenizer.Special);
        var expected = tokenizer.Decode(g.Responses[0].data<long>().Select(x => (int)x).Where((_, t) => g.Mask[0, t].item<bool>()));

        // the README's program, as printed there
        var parameters = new LLama.Common.ModelParams(path) { ContextSize = 64 };
        using var weights = LLama.LLamaWeights.LoadFromFile(parameters);
        var executor = new LLama.StatelessExecutor(weights, parameters);
        var inference = new LLama.Common.InferenceParams { MaxTokens = 16, AntiPrompts = ["<|end|>"], SamplingPipeline = new LLama.Sampling.GreedySamplingPipeline() };
        var text = new System.Text.StringBuilder();
        await foreach (var piece in executor.InferAsync("<|user|>sort: mango<|end|><|assistant|>", inference)) text.Append(piece);

        Assert.Equal(expected, text.ToString());
    }
}
