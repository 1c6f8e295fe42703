using PpoSharp.Models;
using PpoSharp.Text;
using PpoSharp.Training;
using static TorchSharp.torch;

namespace PpoSharp.Rewards;

/// <summary>
/// <c>model:DIR</c>: scores prompt + response with a trained <see cref="RewardModel"/> (no grad, batched). A sequence
/// longer than the reward model's context keeps its last tokens, where the score is read.
/// </summary>
public sealed class RewardModelScorer(RewardModel model, ITokenizer tokenizer, string dir, int batchSize = 64) : IRewardFunction
{
    public string Name => $"model:{dir}";
    public RewardModel Model => model;

    public static RewardModelScorer Load(string dir)
    {
        var (model, tokenizer) = RunDirectory.LoadRewardModel(dir);
        return new RewardModelScorer(model, tokenizer, dir);
    }

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch)
    {
        using var noGrad = no_grad();
        int context = model.Backbone.Config.ContextLength;
        var scores = new List<double>(batch.Count);
        for (int i = 0; i < batch.Count; i += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = batch.Skip(i).Take(batchSize)
                .Select(x => x.Source.Apply(() => tokenizer.Chat.EncodeWithResponse(x.Messages, x.Response)))
                .Select(ids => (IReadOnlyList<int>)ids.Skip(Math.Max(0, ids.Count - context)).ToList()).ToList();
            var (ids, mask) = Sampling.LeftPad(rows, tokenizer.Special.Pad, Models.Devices.DeviceOf(model.Backbone));          // (B, T)
            scores.AddRange(model.Score(ids, mask).data<float>().Select(v => (double)v));
        }
        return scores;
    }
}
