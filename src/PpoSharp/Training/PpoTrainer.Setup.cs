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
        var device = config.Device.Resolve();
        var (actor, reference, tokenizer) = LoadPolicies(initDir, config.Lora, config.ChatTemplateKwargs, needReference: true, log, device);
        CriticModel critic;
        if (criticInitDir != null)
        {
            if (config.Critic == CriticArrangement.Shared)
                throw new PpoSharpException("--critic-init: a shared critic uses the actor's backbone; set critic=separate to start it from a reward model");
            var (rm, rmTokenizer) = RunDirectory.LoadRewardModel(criticInitDir);
            CheckSameTokens(tokenizer, rmTokenizer, criticInitDir);
            if (actor.Base is { } shared) LoraModels.CheckSameBase(rm, shared, criticInitDir, initDir);
            critic = new CriticModel(rm.Backbone, rm.Backbone.Config.DModel, rm.Head.IsMlp);
            critic.InitHeadFrom(rm.Head);
        }
        else critic = new CriticModel(config.Critic == CriticArrangement.Shared ? null
                : actor.Base is { } shared ? LoraModels.NewView(shared, config.Lora) : RunDirectory.LoadPolicyModel(initDir),
            actor.Config.DModel, Tokenizers.IsBuiltIn(tokenizer));
        CheckRewardModels(reward, actor, config.MinRewardModelAccuracy, log, device);
        (actor, reference) = (actor.to(device), reference!.to(device));
        critic.Backbone?.Base?.to(device);                                               // a reward-model adapter's base, not the policy's
        critic.to(device);
        return new PpoTrainer(actor, reference, critic, tokenizer, reward, prompts, config, log, gold, invalid);
    }

    /// <summary>
    /// The actor and (when a KL term needs it) the reference from <paramref name="initDir"/>. Full weights: two copies.
    /// LoRA: a new adapter on the folder's shared frozen base (moved to <paramref name="device"/>), and the base itself,
    /// adapters off, as the reference.
    /// </summary>
    internal static (Decoder Actor, Decoder? Reference, ITokenizer Tokenizer) LoadPolicies(string initDir, LoraSettings lora,
        Dictionary<string, System.Text.Json.JsonElement> chatKwargs, bool needReference, TextWriter log, Device device)
    {
        lora.Validate();
        if (Models.Hf.PeftAdapter.IsAdapter(initDir))
            log.WriteLine($"{initDir} is a LoRA adapter: it is merged into its base {Models.Hf.PeftAdapter.BaseDir(initDir)}, and " + (lora.Enabled
                ? $"a new adapter of rank {lora.R} trains on the merged model" : "every weight of the merged model trains (set lora_r to train a new adapter on it instead)"));
        if (!lora.Enabled)
        {
            var (model, tok) = RunDirectory.LoadPolicy(initDir, RunDirectory.ChatKwargs(chatKwargs));
            return (model, needReference ? RunDirectory.LoadPolicyModel(initDir) : null, tok);
        }
        var tokenizer = RunDirectory.LoadTokenizer(initDir, RunDirectory.ChatKwargs(chatKwargs));
        var shared = LoraModels.SharedBase(initDir).to(device);                          // a view's .to moves only its adapter
        var actor = LoraModels.NewView(shared, lora);                                    // made on the base's device
        log.WriteLine(LoraModels.Describe(actor));
        return (actor, needReference ? shared : null, tokenizer);
    }

    /// <summary>
    /// Refuses or warns about weak reward models (<see cref="RewardModelScorer.CheckTrust"/>); with LoRA, says which <c>model:</c> reward models share the policy's frozen base and which hold a backbone of their
    /// own (full weights, or an adapter on another base), so that the memory a run takes is no surprise.
    /// </summary>
    internal static void CheckRewardModels(IRewardFunction reward, Decoder actor, double minAccuracy, TextWriter log, Device device)
    {
        var scorers = RewardSpec.Functions(reward).OfType<RewardModelScorer>().ToList();
        foreach (var scorer in scorers) scorer.CheckTrust(minAccuracy, log);
        if (actor.Base is null) return;
        foreach (var member in scorers.SelectMany(s => s.Members).Where(m => ReferenceEquals(m.Backbone.Base, actor.Base)))
            member.to(device);                                                          // its adapter and head go where the shared base went
        foreach (var scorer in scorers)
            log.WriteLine(ReferenceEquals(scorer.Model.Backbone.Base, actor.Base)
                ? $"lora: reward {scorer.Name} is an adapter on the policy's base: one backbone for actor, critic, reference and reward model"
                : $"lora: reward {scorer.Name} is {(scorer.Model.Backbone.Base is null ? "a full model" : "an adapter on another base")}: a backbone of its own beside the policy's base");
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
