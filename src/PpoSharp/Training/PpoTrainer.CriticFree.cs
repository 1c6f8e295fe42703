using System.Text.Json;
using PpoSharp.Algorithms;
using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>
/// The critic-free side of the trainer (<see cref="GrpoConfig"/>): advantages from groups of G completions (GRPO, RLOO)
/// or from batch-whitened returns (REINFORCE++), the iteration's metrics under TRL's names, and <c>completions.jsonl</c>.
/// Rollout, update loop, checkpoints and resume are PPO's.
/// </summary>
public sealed partial class PpoTrainer
{
    /// <summary>Each completion of every iteration of an online run (PPO or critic-free), one JSON line each.</summary>
    public const string CompletionsFile = "completions.jsonl";

    /// <summary>The decoded prompts and completions of a rollout, and each reward function's scores by name.</summary>
    private sealed record RolloutText(List<string> Prompts, List<string> Completions, Dictionary<string, double[]> Parts);

    /// <summary>
    /// A critic-free trainer from an SFT run directory: the policy and, only when beta or kl_coef is set, a frozen
    /// reference copy. No critic.
    /// </summary>
    public static PpoTrainer FromRunDirectory(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts, GrpoConfig config,
        TextWriter log, IRewardFunction? gold = null, InvalidRecords? invalid = null)
    {
        config.Validate();
        manual_seed(config.Seed);
        var device = config.Device.Resolve();
        var (actor, reference, tokenizer) = LoadPolicies(initDir, config.Lora, config.ChatTemplateKwargs, config.NeedsReference, log, device);
        CheckRewardModels(reward, actor, config.MinRewardModelAccuracy, log, device);
        actor = actor.to(device);
        reference = reference?.to(device);
        return new PpoTrainer(actor, reference, tokenizer, reward, prompts, config, log, gold, invalid);
    }

    /// <summary>
    /// Phase 2 without a critic: sequence advantages of the chosen estimator spread over each response's tokens (GRPO,
    /// RLOO), or REINFORCE++'s whitened token returns; the KL term goes into the reward (kl_coef, k1) or, via beta, into
    /// the loss (<see cref="PolicyLoss.Compute"/>). With mask_truncated_completions the loss mask leaves out responses
    /// that hit the length cap.
    /// </summary>
    private Experience CriticFreeAdvantages(Experience e, GrpoConfig g)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var mask = e.ResponseMask;                                                                     // (B, N)
        int groupSize = _numGenerations;
        Tensor advantages;                                                                              // (B, N)
        Tensor? returns = null;
        switch (g.Estimator)
        {
            case AdvantageEstimator.Grpo:
                advantages = GroupAdvantages.ToTokens(GroupAdvantages.Grpo(e.Scores, groupSize, g.ScaleRewards), mask);
                break;
            case AdvantageEstimator.Rloo:
                var rewards = g.KlCoef > 0 ? e.Scores - g.KlCoef * SequenceKl.Compute(e.OldLogProbs, e.RefLogProbs!, mask) : e.Scores;   // (B)
                advantages = GroupAdvantages.ToTokens(GroupAdvantages.Rloo(rewards, groupSize), mask);
                break;
            default:
                var kl = e.RefLogProbs is null ? zeros_like(e.OldLogProbs) : Kl.PerToken(e.OldLogProbs, e.RefLogProbs, KlEstimator.K1);   // (B, N)
                (advantages, returns) = g.Estimator == AdvantageEstimator.Reinforce
                    ? ReinforcePlusPlus.Compute(e.Scores, kl, mask, g.KlCoef)
                    : ReinforcePlusPlus.ComputeBaseline(e.Scores, kl, mask, g.KlCoef, groupSize);
                break;
        }
        var lossMask = g.MaskTruncatedCompletions ? mask.logical_and(e.Truncated!.logical_not().unsqueeze(1)) : null;   // (B, N)
        return e with
        {
            Advantages = advantages.MoveToOuterDisposeScope(),
            Returns = returns?.MoveToOuterDisposeScope(),
            LossMask = lossMask?.MoveToOuterDisposeScope(),
        };
    }

    /// <summary>(B) true for the rows of groups whose rewards differ (not all equal): the groups dynamic sampling keeps.</summary>
    private Tensor GroupHasSignal(Tensor scores)
    {
        var grouped = scores.view(-1, _numGenerations);                                                 // (B/G, G)
        var flat = grouped.amax([1], keepdim: true).eq(grouped.amin([1], keepdim: true));              // (B/G, 1)
        return flat.logical_not().expand(-1, _numGenerations).reshape(-1);
    }

    /// <summary>Phase 4 of a critic-free iteration: the metrics row, TRL's keys where TRL logs the quantity.</summary>
    private Dictionary<string, object> CriticFreeMetrics(int iteration, Experience e, UpdateStats u, double rolloutSeconds, double updateSeconds)
    {
        using var scope = NewDisposeScope();
        var lengths = e.ResponseMask.to(ScalarType.Float32).sum(1);                                   // (B)
        var grouped = e.Scores.view(-1, _numGenerations);                                               // (B/G, G)
        double Item(Tensor t) => t.to(ScalarType.Float32).item<float>();
        WarnIfFirstRatioNotOne(iteration, u);
        double reward = Item(e.Scores.mean());
        var row = new Dictionary<string, object>
        {
            ["iteration"] = iteration,
            ["reward"] = reward,
            ["reward_mean"] = reward,                                                                  // the name the report and summary read
            // TRL: the mean of the groups' standard deviations; with G = 1, the batch's.
            ["reward_std"] = _numGenerations > 1 ? Item(grouped.std(1, unbiased: true).mean()) : Item(e.Scores.std()),
        };
        foreach (var (name, scores) in _texts!.Parts)
        {
            double mean = scores.Average();
            row[$"rewards/{name}/mean"] = mean;
            row[$"rewards/{name}/std"] = scores.Length > 1 ? Math.Sqrt(scores.Sum(s => (s - mean) * (s - mean)) / (scores.Length - 1)) : 0.0;
        }
        row["frac_reward_zero_std"] = Item(GroupHasSignal(e.Scores).logical_not().to(ScalarType.Float32).mean());   // every group has G rows: the share of groups
        row["completions/mean_length"] = Item(lengths.mean());
        row["completions/min_length"] = Item(lengths.min());
        row["completions/max_length"] = Item(lengths.max());
        row["completions/clipped_ratio"] = Item(e.Truncated!.to(ScalarType.Float32).mean());
        if (e.RefLogProbs is not null)                                                                  // per-token k3 KL(pi_old || pi_ref), TRL's kl
            row["kl"] = Item(Masked.Mean(Kl.PerToken(e.OldLogProbs, e.RefLogProbs, KlEstimator.K3), e.ResponseMask));
        row["entropy"] = u.Entropy;
        row["loss"] = u.PolicyLoss;
        row["approx_kl"] = u.ApproxKl;
        row["clip_ratio/low_mean"] = u.ClipRatioLow;
        row["clip_ratio/high_mean"] = u.ClipRatioHigh;
        row["clip_ratio/region_mean"] = u.ClipFrac;
        row["ratio_mean"] = u.RatioMean;
        row["ratio_max"] = u.RatioMax;
        row["first_ratio_mean"] = u.FirstRatioMean;
        row["grad_norm"] = u.GradNorm;
        row["num_iterations"] = u.Epochs;
        row["sequences_trained"] = u.Sequences;
        row["skipped_steps"] = u.SkippedSteps;
        return Finish(row, e, Item(lengths.sum()), rolloutSeconds, updateSeconds);
    }

    /// <summary>Appends the iteration's completions to <c>completions.jsonl</c>: prompt, completion, reward (total and per function), advantage.</summary>
    private void WriteCompletions(int iteration, Experience e)
    {
        if (_outDir is null || _texts is null) return;
        using var scope = NewDisposeScope();
        var scores = e.Scores.to(ScalarType.Float32).cpu().data<float>().ToArray();
        var advantages = Masked.RowMean(e.Advantages!, e.ResponseMask).to(ScalarType.Float32).cpu().data<float>().ToArray();   // a sequence's advantage (mean over its tokens)
        var truncated = e.Truncated!.cpu().data<bool>().ToArray();
        var lines = new List<string>(scores.Length);
        for (int i = 0; i < scores.Length; i++)
            lines.Add(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["iteration"] = iteration,
                ["group"] = i / _numGenerations,
                ["prompt"] = _texts.Prompts[i],
                ["completion"] = _texts.Completions[i],
                ["reward"] = (double)scores[i],
                ["rewards"] = _texts.Parts.ToDictionary(p => p.Key, p => p.Value[i]),
                ["advantage"] = (double)advantages[i],
                ["truncated"] = truncated[i],
            }, Json.Compact));
        File.AppendAllLines(Path.Combine(_outDir, CompletionsFile), lines);
    }

    /// <summary>Keeps the lines of <c>completions.jsonl</c> of iterations 1..<paramref name="iterations"/> (a resume redoes the later ones).</summary>
    private static void TruncateCompletions(string runDir, int iterations)
    {
        var path = Path.Combine(runDir, CompletionsFile);
        if (!File.Exists(path)) return;
        var kept = File.ReadLines(path).Where(line =>
        {
            if (line.Length == 0) return false;
            try
            {
                using var doc = JsonDocument.Parse(line);
                return doc.RootElement.GetProperty("iteration").GetInt32() <= iterations;
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException) { return false; }   // a line cut by a crash
        }).ToList();
        AtomicFile.WriteText(path, kept.Count == 0 ? "" : string.Join("\n", kept) + "\n");
    }
}
