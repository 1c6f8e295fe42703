using PpoSharp.Algorithms;
using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Rewards;

/// <summary>
/// <c>model:DIR</c>: scores prompt + response with a trained <see cref="RewardModel"/> (no grad, batched); with an
/// ensemble (<c>rm --ensemble N</c>), with every member, combined as mean - k std (<see cref="EnsembleReward"/>). A
/// sequence longer than the reward model's context keeps its last tokens, where the score is read.
/// </summary>
public sealed class RewardModelScorer(IReadOnlyList<RewardModel> members, ITokenizer tokenizer, string dir, double k = 0, int batchSize = 64) : IRewardFunction
{
    public RewardModelScorer(RewardModel model, ITokenizer tokenizer, string dir, int batchSize = 64) : this([model], tokenizer, dir, 0, batchSize) { }

    public string Name => $"model:{dir}";
    /// <summary>The reward model (an ensemble's first member).</summary>
    public RewardModel Model => members[0];
    public IReadOnlyList<RewardModel> Members => members;
    /// <summary>The held-out accuracy its training recorded (<c>reward_model.json</c>); null for a model from elsewhere.</summary>
    public RewardModelCard? Card { get; init; }

    /// <summary>A reward model folder, or an ensemble's (its <c>ensemble.json</c> names the members and k).</summary>
    public static RewardModelScorer Load(string dir)
    {
        if (EnsembleFile.Read(dir) is not { } ensemble)
        {
            var (model, tokenizer) = RunDirectory.LoadRewardModel(dir);
            return new RewardModelScorer(model, tokenizer, dir) { Card = RewardModelCard.Read(dir) };
        }
        var loaded = ensemble.Members.Select(m => RunDirectory.LoadRewardModel(Path.Combine(dir, m))).ToList();
        var cards = ensemble.Members.Select(m => RewardModelCard.Read(Path.Combine(dir, m))).OfType<RewardModelCard>().ToList();
        return new RewardModelScorer(loaded.Select(l => l.Model).ToList(), loaded[0].Tokenizer, dir, ensemble.K)
        {
            Card = cards.Count == 0 ? null : cards.MinBy(c => c.HeldOutAccuracy),              // trust the weakest member
        };
    }

    /// <summary>
    /// Refuses a reward model whose recorded held-out accuracy is below <paramref name="minAccuracy"/> (near chance: the
    /// policy would learn its noise), and warns when it is low or far below its training accuracy (memorised pairs).
    /// </summary>
    public void CheckTrust(double minAccuracy, TextWriter log)
    {
        if (Card is not { HeldOutPairs: > 0 } c) return;
        if (c.HeldOutAccuracy < minAccuracy)
            throw new PpoSharpException($"{Name}: held-out pair accuracy {c.HeldOutAccuracy:P1} (n = {c.HeldOutPairs}) is near chance (50%); a policy trained against it learns its noise. Train it on more pairs, or set min_reward_model_accuracy=0 to use it anyway");
        if (c.HeldOutAccuracy < WeakAccuracy)
            log.WriteLine($"warning: {Name}: held-out pair accuracy {c.HeldOutAccuracy:P1} (n = {c.HeldOutPairs}) is low: expect the policy to exploit it; watch a --gold rule and keep best/ with --eval");
        if (c.TrainAccuracy - c.HeldOutAccuracy > RewardTrainer.OverfitGap)
            log.WriteLine($"warning: {Name}: training accuracy {c.TrainAccuracy:P1} is far above held-out {c.HeldOutAccuracy:P1}: it memorised its pairs");
    }

    /// <summary>Held-out accuracy below which a reward model is reported as weak.</summary>
    public const double WeakAccuracy = 0.75;

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch)
    {
        using var noGrad = no_grad();
        int context = Model.Backbone.Config.ContextLength;
        var scores = new List<double>(batch.Count);
        for (int i = 0; i < batch.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = batch.Skip(i).Take(batchSize)
                .Select(x => x.Source.Apply(() => tokenizer.Chat.EncodeWithResponse(x.Messages, x.Response)))
                .Select(ids => (IReadOnlyList<int>)ids.Skip(Math.Max(0, ids.Count - context)).ToList()).ToList();
            var (ids, mask) = Sampling.LeftPad(rows, tokenizer.Special.Pad, Models.Devices.DeviceOf(Model.Backbone));          // (B, T)
            var score = members.Count == 1 ? Model.Score(ids, mask)                                                          // (B)
                : EnsembleReward.Conservative(stack(members.Select(m => m.Score(ids, mask)).ToArray()), k);                 // (M, B) -> (B)
            scores.AddRange(score.data<float>().Select(v => (double)v));
        }
        return scores;
    }
}

/// <summary><c>ensemble.json</c> of an ensemble's folder: the member folders (relative) and k of mean - k std.</summary>
public sealed record EnsembleFile(List<string> Members, double K)
{
    public const string FileName = "ensemble.json";

    public static EnsembleFile? Read(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (Json.ReadFile<EnsembleFile>(path) is not { } e) return null;
        if (e.Members is not { Count: > 0 }) throw new PpoSharpException($"{path}: 'members' must list at least one reward-model folder");
        if (!(e.K >= 0)) throw new PpoSharpException($"{path}: 'k' must be >= 0 (got {e.K})");
        return e;
    }

    public void Write(string dir) => Json.WriteFile(Path.Combine(dir, FileName), this);
}
