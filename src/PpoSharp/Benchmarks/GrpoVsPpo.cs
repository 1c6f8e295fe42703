using PpoSharp.Data;
using PpoSharp.Rewards;
using PpoSharp.Training;

namespace PpoSharp.Benchmarks;

public static partial class Bench
{
    /// <summary>GRPO's prompts per iteration and completions per prompt: 8 x 8 = PPO's default 64 responses of one sample each.</summary>
    private const int GrpoPrompts = 8, GrpoGenerations = 8;

    /// <summary>
    /// GRPO's config matched to <paramref name="ppo"/> for a time comparison: as many completions per iteration
    /// (<see cref="GrpoPrompts"/> x <see cref="GrpoGenerations"/> = PPO's batch_size x 1), the same max length, minibatches
    /// and passes (num_iterations = num_ppo_epochs), and beta 0, so no reference model (TRL's default); PPO keeps its
    /// KL penalty, its reference and its critic. What GRPO saves is the critic's forward and backward and the reference.
    /// </summary>
    public static GrpoConfig MatchedGrpo(PpoConfig ppo) => new()
    {
        Iterations = ppo.Iterations, BatchSize = ppo.BatchSize / GrpoGenerations, NumGenerations = GrpoGenerations,
        NumMiniBatches = ppo.NumMiniBatches, NumIterations = ppo.NumPpoEpochs, MaxCompletionLength = ppo.ResponseLength,
        Beta = 0, CheckpointEvery = ppo.CheckpointEvery, Seed = ppo.Seed,
    };

    /// <summary>
    /// A GRPO iteration beside the PPO one just measured (<paramref name="ppoRows"/>, run back to back on the same
    /// data and initial model): its median seconds, PPO's over it, the tokens each generated per iteration and GRPO's
    /// phase shares. Medians of the iterations after the first.
    /// </summary>
    private static void GrpoFigures(Dictionary<string, object> r, string dir, IReadOnlyList<PromptRecord> prompts, PpoConfig ppo,
        List<Dictionary<string, System.Text.Json.JsonElement>> ppoRows, TextWriter log)
    {
        var config = MatchedGrpo(ppo);
        var rows = RunTrainer(dir, "grpo", init => PpoTrainer.FromRunDirectory(init, new EditDistance(), prompts, config, TextWriter.Null));
        double grpo = IterationSeconds(rows), ppoSeconds = IterationSeconds(ppoRows);
        r["grpo_iteration_seconds"] = grpo;
        r["ppo_grpo_time_ratio"] = ppoSeconds / grpo;
        r["ppo_generated_tokens_per_iteration"] = MedianAfterFirst(ppoRows, "response_length") * ppo.BatchSize;
        r["grpo_generated_tokens_per_iteration"] = MedianAfterFirst(rows, "completions/mean_length") * config.BatchSize * config.NumGenerations;
        PhaseShares(r, "grpo", rows);
        log.WriteLine($"bench: GRPO iteration ({config.BatchSize} prompts x {config.NumGenerations}, {config.MaxCompletionLength} new tokens, beta 0, "
            + $"{config.NumIterations} passes x {config.NumMiniBatches} minibatches as PPO): {grpo:F2} s vs PPO {ppoSeconds:F2} s ({ppoSeconds / grpo:F2}x); "
            + $"generated tokens {r["grpo_generated_tokens_per_iteration"]:F0} vs {r["ppo_generated_tokens_per_iteration"]:F0}; "
            + $"generate {r["grpo_share_generate"]:P0}, old log-probs {r["grpo_share_forward"]:P0}, update {r["grpo_share_update"]:P0}");
    }
}
