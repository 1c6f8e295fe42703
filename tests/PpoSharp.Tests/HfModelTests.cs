using System.Text.Json;
using PpoSharp.Models;
using PpoSharp.Models.Hf;
using PpoSharp.Text;
using static TorchSharp.torch;

namespace PpoSharp.Tests;

/// <summary>
/// The tiny HF checkpoints reproduce the outputs of implementations we did not write (expected.json: llama2.c's model.py
/// for tiny-llama3 with q/k rows permuted to HF's rotary layout, nanoGPT for tiny-gpt2; for tiny-qwen2, tiny-qwen3 and
/// tiny-mistral an independent PyTorch re-implementation of transformers' modeling files, tools/reference/python): logits
/// at probe ids, log-sums, arg-max and next-token log-probabilities within 1e-4, alone, left-padded into one batch, and
/// decoded with the KV cache.
/// </summary>
public class HfModelTests
{
    public static TheoryData<string> Fixtures => new() { "tiny-llama3", "tiny-gpt2", "tiny-qwen2", "tiny-qwen3", "tiny-mistral" };

    private sealed record Position(int Argmax, double Logsumexp, double[] ProbeLogits, double? NextTokenLogprob);

    private sealed record Sequence(int[] InputIds, Position[] Positions);

    private sealed record Greedy(int[] PromptIds, int[] NewIds);

    private sealed record Expected(int[] ProbeIds, Sequence[] Sequences, Greedy Greedy);

    private static readonly JsonSerializerOptions Snake = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private static (Decoder Model, Expected Expected) Load(string name)
    {
        var dir = TestSupport.HfModel(name);
        var (info, spec) = HfCheckpoint.Read(dir);
        var model = new Decoder(spec, info);
        HfCheckpoint.Load(dir, info, model);
        model.eval();
        return (model, JsonSerializer.Deserialize<Expected>(File.ReadAllText(Path.Combine(dir, "expected.json")), Snake)!);
    }

    /// <summary>Checks logits (T, V) of one sequence against its expected positions.</summary>
    private static void AssertMatches(Expected e, Sequence s, Tensor logits)
    {
        var logp = logits.log_softmax(-1);                                                     // (T, V)
        for (int t = 0; t < s.Positions.Length; t++)
        {
            var p = s.Positions[t];
            Assert.Equal(p.Argmax, logits[t].argmax().item<long>());
            Assert.Equal(p.Logsumexp, logits[t].logsumexp(0).item<float>(), 1e-4);
            var probes = logits[t].index_select(0, tensor(e.ProbeIds.Select(i => (long)i).ToArray())).data<float>().ToArray();
            for (int k = 0; k < probes.Length; k++) Assert.Equal(p.ProbeLogits[k], probes[k], 1e-4);
            if (p.NextTokenLogprob is double lp) Assert.Equal(lp, logp[t, s.InputIds[t + 1]].item<float>(), 1e-4);
        }
    }

    [Theory, MemberData(nameof(Fixtures))]
    public void Load_EachSequenceAlone_MatchesReferenceLogits(string name)
    {
        var (model, e) = Load(name);
        using var _ = no_grad();
        foreach (var s in e.Sequences)
            AssertMatches(e, s, model.forward(tensor(s.InputIds.Select(i => (long)i).ToArray(), [1, s.InputIds.Length]))[0]);
    }

    [Theory, MemberData(nameof(Fixtures))]
    public void Load_SequencesLeftPaddedIntoOneBatch_MatchReferenceLogits(string name)
    {
        var (model, e) = Load(name);
        using var _ = no_grad();
        var (ids, mask) = Sampling.LeftPad(e.Sequences.Select(s => (IReadOnlyList<int>)s.InputIds).ToList(), pad: 0);   // (B, T)
        var logits = model.Logits(model.Hidden(ids, Sampling.PositionIds(mask), mask));                                  // (B, T, V)
        long t = ids.shape[1];
        for (int i = 0; i < e.Sequences.Length; i++)
        {
            int n = e.Sequences[i].InputIds.Length;
            AssertMatches(e, e.Sequences[i], logits[i].narrow(0, t - n, n));
        }
    }

    [Theory, MemberData(nameof(Fixtures))]
    public void Load_DecodedTokenByTokenWithKvCache_MatchesReferenceLogits(string name)
    {
        var (model, e) = Load(name);
        using var _ = no_grad();
        var s = e.Sequences[^1];
        using var cache = new KvCache(model.Config, 1, s.InputIds.Length, ScalarType.Float32, CPU);
        var steps = new List<Tensor>();
        for (int t = 0; t < s.InputIds.Length; t++)
            steps.Add(model.Logits(model.Hidden(tensor(new long[] { s.InputIds[t] }, [1, 1]), cache: cache))[0]);  // (1, V)
        AssertMatches(e, s, cat(steps, 0));
    }

    [Theory, MemberData(nameof(Fixtures))]
    public void Generate_Greedy_GivesReferenceContinuation(string name)
    {
        var (model, e) = Load(name);
        var (ids, mask) = Sampling.LeftPad([e.Greedy.PromptIds], pad: 0);
        using var g = Sampling.Generate(model, ids, mask, new SamplingOptions(e.Greedy.NewIds.Length, Greedy: true), new SpecialTokenIds(0, []));
        Assert.Equal(e.Greedy.NewIds.Select(i => (long)i), g.Responses.data<long>().ToArray());
    }

    [Theory]
    [InlineData("tiny-qwen2", "use_sliding_window", "true", "use_sliding_window true is not supported")]
    [InlineData("tiny-gpt2", "scale_attn_by_inverse_layer_idx", "true", "scale_attn_by_inverse_layer_idx true is not supported")]
    [InlineData("tiny-llama3", "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": \"eight\"}", "config.json: rope_scaling: 'factor' must be a number")]
    [InlineData("tiny-llama3", "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "config.json: rope_scaling: missing key 'low_freq_factor'")]
    [InlineData("tiny-mistral", "num_key_value_heads", "3", "the number of key/value heads (3) must divide the number of attention heads (4)")]
    public void Read_ConfigThatWouldComputeDifferently_IsRefusedNamingTheKey(string name, string key, string json, string message)
    {
        var dir = TestSupport.HfModel(name);
        var path = Path.Combine(dir, "config.json");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        config[key] = System.Text.Json.Nodes.JsonNode.Parse(json);
        File.WriteAllText(path, config.ToJsonString());
        var e = Assert.Throws<PpoSharpException>(() => HfCheckpoint.Read(dir));
        Assert.Contains(message, e.Message);
        Assert.StartsWith(path, e.Message);
    }

    [Fact]
    public void Bf16Compute_KeepsRotaryFrequenciesInFp32_LogitsStayCloseOverLongDistances()
    {
        manual_seed(3);
        var spec = new DecoderSpec(64, 4096, 2, 2, 64)
        {
            Norm = NormKind.RmsNorm, Positions = PositionKind.Rope, Mlp = MlpKind.SwiGlu, QkvBias = false, OutBias = false, MlpBias = false, Intermediate = 128,
        };
        var model = new Decoder(spec);
        model.eval();
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())                                     // sharp attention: scores depend on relative positions
            if (name.EndsWith("qkv.weight", StringComparison.Ordinal)) p.mul_(25);
        var ids = randint(0, 64, [1, 2048]);                                                  // (1, T): RoPE errors grow with the distance between positions
        var fp32 = model.forward(ids).narrow(1, 2040, 8);                                     // (1, 8, V)
        model.ComputeIn(ComputeDtype.BFloat16);
        Assert.Empty(model.named_buffers());                                                   // nothing floating besides the weights
        var bf16 = model.forward(ids).narrow(1, 2040, 8).to(ScalarType.Float32);
        double relative = (bf16 - fp32).norm().item<float>() / fp32.norm().item<float>();
        Assert.True(relative < 0.2, $"bf16 logits differ from fp32 by {relative:P1}");   // 8% here; frequencies rounded to bf16 gave 46%
    }
}
