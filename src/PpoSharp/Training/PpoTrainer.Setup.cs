using PpoSharp.Data;
using PpoSharp.Models;
using PpoSharp.Rewards;
using PpoSharp.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace PpoSharp.Training;

/// <summary>Building a <see cref="PpoTrainer"/>: its models from run directories, and the checks on its prompts and critic.</summary>
public sealed partial class PpoTrainer
{
    /// <summary>
    /// Actor and reference from an SFT run directory; the critic gets its own backbone from the same run (or shares the
    /// actor's), or, with <paramref name="criticInitDir"/>, the backbone and head of a trained reward model.
    /// </summary>
    public static PpoTrainer FromRunDirectory(string initDir, IRewardFunction reward, IReadOnlyList<PromptRecord> prompts, PpoConfig config,
        TextWriter log, IRewardFunction? gold = null, string? criticInitDir = null, InvalidRecords? invalid = null)
    {
        manual_seed(config.Seed);
        var (actor, tokenizer) = RunDirectory.LoadPolicy(initDir, RunDirectory.ChatKwargs(config.ChatTemplateKwargs));
        var reference = RunDirectory.LoadPolicyModel(initDir);
        CriticModel critic;
        if (criticInitDir != null)
        {
            if (config.Critic == CriticArrangement.Shared)
                throw new PpoSharpException("--critic-init: a shared critic uses the actor's backbone; set critic=separate to start it from a reward model");
            var (rm, rmTokenizer) = RunDirectory.LoadRewardModel(criticInitDir);
            CheckSameTokens(tokenizer, rmTokenizer, criticInitDir);
            critic = new CriticModel(rm.Backbone, rm.Backbone.Config.DModel, rm.Head.IsMlp);
            critic.InitHeadFrom(rm.Head);
        }
        else critic = new CriticModel(config.Critic == CriticArrangement.Separate ? RunDirectory.LoadPolicyModel(initDir) : null, actor.Config.DModel,
            Tokenizers.IsBuiltIn(tokenizer));
        var device = config.Device.Resolve();
        (actor, reference) = (actor.to(device), reference.to(device));
        critic.to(device);
        return new PpoTrainer(actor, reference, critic, tokenizer, reward, prompts, config, log, gold, invalid);
    }

    /// <summary>A critic from a reward model reads the policy's token ids, so both must tokenize alike: same vocabulary size and the same ids for a probe text.</summary>
    private static void CheckSameTokens(ITokenizer policy, ITokenizer rewardModel, string dir)
    {
        const string probe = "Hello, world! 123 <b>ok</b>\n";
        if (policy.VocabSize != rewardModel.VocabSize || !policy.Encode(probe).SequenceEqual(rewardModel.Encode(probe)))
            throw new PpoSharpException($"--critic-init {dir}: the reward model's tokenizer ({rewardModel.VocabSize} ids) differs from the policy's ({policy.VocabSize} ids); the critic reads the policy's tokens");
        (rewardModel as IDisposable)?.Dispose();
    }

    /// <summary>Prompts rendered for generation; one that leaves no room to respond is an error (or skipped and listed).</summary>
    private static (List<PromptRecord>, List<int>[]) EncodePrompts(IReadOnlyList<PromptRecord> prompts, ITokenizer tokenizer, int context, InvalidRecords invalid)
    {
        var kept = new List<(PromptRecord Record, List<int> Ids)>();
        foreach (var p in prompts)
        {
            var ids = p.Source.Apply(() => tokenizer.Chat.EncodePrompt(p.Messages));
            if (ids.Count >= context && invalid.Reject($"{p.Source}: prompt is {ids.Count} tokens, leaving no room to respond within context_length {context}")) continue;
            kept.Add((p, ids));
        }
        if (kept.Count == 0) throw new PpoSharpException($"every prompt is longer than context_length {context} (first: {invalid.Skipped[0]})");
        return (kept.Select(k => k.Record).ToList(), kept.Select(k => k.Ids).ToArray());
    }
}
