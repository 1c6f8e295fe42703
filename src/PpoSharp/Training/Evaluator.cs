using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>One evaluated prompt.</summary>
public sealed record EvalSample(string Prompt, string Response, IReadOnlyList<string> Solutions, double Reward, bool ExactMatch);

/// <summary>Greedy-decoding figures on a prompt file: mean reward, exact-match share, mean response length in tokens.</summary>
public sealed record EvalResult(int N, double RewardMean, double ExactMatch, double ResponseLength, IReadOnlyList<EvalSample> Samples);

public static class Evaluator
{
    /// <summary>Decoded text of each row of a generation, up to (not including) EOS, and the number of tokens generated.</summary>
    public static List<(string Text, int Length)> Decode(ITokenizer tokenizer, Generation g)
    {
        var ids = g.Responses.to(ScalarType.Int64).data<long>().ToArray();
        var mask = g.Mask.to(ScalarType.Bool).data<bool>().ToArray();
        long n = g.Responses.shape[1];
        var rows = new List<(string, int)>();
        for (int i = 0; i < g.Responses.shape[0]; i++)
        {
            var row = new List<int>();
            for (long j = 0; j < n && mask[i * n + j]; j++) row.Add((int)ids[i * n + j]);
            rows.Add((tokenizer.Decode(row.Where(id => !tokenizer.Special.IsEos(id))), row.Count));
        }
        return rows;
    }

    /// <summary>Generates for a batch of prompts (left-padded) and decodes the responses.</summary>
    public static List<(string Text, int Length)> Complete(Decoder model, ITokenizer tokenizer, IReadOnlyList<PromptRecord> prompts,
        SamplingOptions options, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var encoded = EncodePrompts(tokenizer, prompts);
        var (ids, mask) = Sampling.LeftPad(encoded, tokenizer.Special.Pad, Devices.DeviceOf(model));
        using var generation = Sampling.Generate(model, ids, mask, options, tokenizer.Special, generator);
        return Decode(tokenizer, generation);
    }

    /// <summary>
    /// Monte-Carlo KL(pi || pi_ref) per sequence: responses sampled from <paramref name="policy"/> at temperature 1,
    /// mean over prompts of sum_t (log pi - log pi_ref). Zero when the two models are the same.
    /// </summary>
    public static double KlToReference(Decoder policy, Decoder reference, ITokenizer tokenizer, IReadOnlyList<PromptRecord> prompts,
        int maxNewTokens, Generator generator, int batchSize = 64)
    {
        using var noGrad = no_grad();
        double total = 0;
        for (int i = 0; i < prompts.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var encoded = EncodePrompts(tokenizer, prompts.Skip(i).Take(batchSize));
            var (ids, mask) = Sampling.LeftPad(encoded, tokenizer.Special.Pad, Devices.DeviceOf(policy));   // (B, P)
            var g = Sampling.Generate(policy, ids, mask, new SamplingOptions(maxNewTokens), tokenizer.Special, generator);
            var sequences = cat([ids, g.Responses], 1);                                           // (B, P+N)
            var full = cat([mask, g.Mask], 1);
            long p = ids.shape[1];
            var logp = ResponseScoring.LogProbs(policy, sequences, full, p, 1.0);                 // (B, N)
            var refLogp = ResponseScoring.LogProbs(reference, sequences, full, p, 1.0);           // (B, N)
            total += SequenceKl.Compute(logp, refLogp, g.Mask).sum().item<float>();
        }
        return total / prompts.Count;
    }

    /// <summary>Prompts rendered for generation; a template error names the record.</summary>
    public static List<IReadOnlyList<int>> EncodePrompts(ITokenizer tokenizer, IEnumerable<PromptRecord> prompts) =>
        prompts.Select(p => (IReadOnlyList<int>)p.Source.Apply(() => tokenizer.Chat.EncodePrompt(p.Messages))).ToList();

    /// <summary>Greedy decoding on every prompt, scored with <paramref name="reward"/> and exact match against <c>solution</c>.</summary>
    public static EvalResult Evaluate(Decoder model, ITokenizer tokenizer, IReadOnlyList<PromptRecord> prompts, IRewardFunction reward,
        int maxNewTokens, int batchSize = 64)
    {
        model.eval();
        var options = new SamplingOptions(MaxNewTokens: maxNewTokens, Greedy: true);
        var samples = new List<EvalSample>();
        var lengths = new List<int>();
        var exact = new ExactMatch();
        for (int i = 0; i < prompts.Count; i += batchSize)
        {
            var batch = prompts.Skip(i).Take(batchSize).ToList();
            var outputs = Complete(model, tokenizer, batch, options);
            var inputs = batch.Select((p, k) => new RewardInput(p.Messages, outputs[k].Text, p.Solutions, p.Source, outputs[k].Length, p.Columns)).ToList();
            var rewards = reward.Score(inputs);
            lengths.AddRange(outputs.Select(o => o.Length));
            var matches = batch.Select((p, k) => p.Solutions.Count > 0 && exact.Score([inputs[k]])[0] == 1).ToList();
            samples.AddRange(batch.Select((p, k) => new EvalSample(inputs[k].Prompt, outputs[k].Text, p.Solutions, rewards[k], matches[k])));
        }
        return new EvalResult(samples.Count, samples.Average(s => s.Reward), samples.Average(s => s.ExactMatch ? 1.0 : 0.0),
            lengths.Average(), samples);
    }
}
