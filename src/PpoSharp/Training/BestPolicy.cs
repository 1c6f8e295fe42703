using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;

namespace PpoSharp.Training;

/// <summary>What an online run's held-out evaluation during training is given: prompts, the reward to select by, and how often.</summary>
/// <param name="Prompts">Held-out prompts (<c>--eval</c>).</param>
/// <param name="Reward">The gold rule when there is one (selection by the gold), else the training reward.</param>
/// <param name="ByGold">Whether <paramref name="Reward"/> is a rule (the gold, or a rule training reward); with a reward model and no gold, only evaluations whose KL is within <paramref name="KlBudget"/> count.</param>
/// <param name="Every">Evaluate every this many iterations (and after the last).</param>
/// <param name="MaxNewTokens">Greedy response length.</param>
/// <param name="KlBudget">Without a gold: the largest mean KL to the reference (nats per sequence) at which a held-out reward counts.</param>
public sealed record HeldOutEval(IReadOnlyList<PromptRecord> Prompts, IRewardFunction Reward, bool ByGold, int Every, int MaxNewTokens, double KlBudget);

/// <summary>
/// <c>best/</c> of an online run: the policy with the best held-out reward so far (by the gold rule when given, else by
/// the training reward among evaluations within the KL budget), saved as a model folder whenever an evaluation beats it,
/// with <c>best.json</c> saying which iteration it is. The initial model is the first candidate (iteration 0), so
/// <c>best/</c> is never worse on the held-out prompts than where the run started.
/// </summary>
public sealed class BestPolicy(string outDir, HeldOutEval eval, ITokenizer tokenizer, object training, bool resume)
{
    public const string Folder = "best", InfoFile = "best.json";

    /// <summary>The selection so far: iteration (0 = the initial model), held-out reward and exact match.</summary>
    public sealed record Info(int Iteration, double Reward, double ExactMatch, string Metric);

    private Info? _best = resume ? ReadInfo(outDir) : null;                               // a new run starts over

    public Info? Best => _best;

    /// <summary>The selection recorded in <paramref name="outDir"/> (a save cut short by a crash is put right first); null when none.</summary>
    public static Info? ReadInfo(string outDir)
    {
        var dir = Path.Combine(outDir, Folder);
        AtomicFile.RecoverFolder(dir, InfoFile);
        return Json.ReadFile<Info>(Path.Combine(dir, InfoFile));
    }

    /// <summary>
    /// Evaluates <paramref name="policy"/> when <paramref name="iteration"/> is due (0: the initial model, once), adds
    /// <c>eval_*</c> keys to <paramref name="row"/>, and keeps it in <c>best/</c> when it beats the best so far.
    /// </summary>
    /// <paramref name="known"/>: the evaluation of this very model when the caller has made it already. Returns the
    /// evaluation, or null when none was due.
    /// <paramref name="kl"/>: the evaluated model's KL to the reference, asked for only where it decides (no gold).
    public EvalResult? Offer(Decoder policy, int iteration, int total, Func<double> kl, Dictionary<string, object>? row, EvalResult? known = null)
    {
        if (iteration == 0 ? _best is not null : iteration % eval.Every != 0 && iteration != total) return null;
        var result = known ?? Evaluator.Evaluate(policy, tokenizer, eval.Prompts, eval.Reward, eval.MaxNewTokens);
        if (row is not null) (row["eval_reward"], row["eval_exact_match"]) = (result.RewardMean, result.ExactMatch);
        bool counts = eval.ByGold || iteration == 0 || WithinBudget(kl(), row);
        if (!counts || _best is not null && result.RewardMean <= _best.Reward) return result;
        _best = new Info(iteration, result.RewardMean, result.ExactMatch, eval.ByGold ? $"held-out {eval.Reward.Name} (gold)" : $"held-out {eval.Reward.Name} at kl <= {eval.KlBudget:G}");
        AtomicFile.ReplaceFolder(Path.Combine(outDir, Folder), tmp =>
        {
            RunDirectory.SavePolicy(tmp, policy, tokenizer, training);
            Json.WriteFile(Path.Combine(tmp, InfoFile), _best);                               // last: the marker
        });
        return result;
    }

    private bool WithinBudget(double kl, Dictionary<string, object>? row)
    {
        if (row is not null) row["eval_kl"] = kl;
        return kl <= eval.KlBudget;
    }
}
