using PpoSharp.Algorithms;
using System.ComponentModel.DataAnnotations;
using System.Text.Json.Serialization;
using PpoSharp.Models;

namespace PpoSharp.Training;

/// <summary>
/// Settings of the critic-free trainers (<c>ppo-sharp grpo</c>): GRPO, Dr. GRPO and DAPO's options, RLOO, REINFORCE++
/// and REINFORCE++-baseline. Keys and defaults are TRL's GRPOConfig where TRL has the key; where the built-in task on a
/// 2-core CPU needs another default (num_generations, max_completion_length, learning rate, batch size), the name is
/// TRL's and the README says why the value differs.
/// </summary>
public sealed record GrpoConfig : RolloutKeys
{
    /// <summary>Defaults for a pretrained (Hugging Face) model: TRL's learning rate 1e-6, 64-token completions, sized for a CPU.</summary>
    public static GrpoConfig Pretrained => new() { Lr = 1e-6, BatchSize = 4, NumGenerations = 4, MaxCompletionLength = 64, Iterations = 20, CheckpointEvery = 5 };

    /// <summary>grpo, rloo, reinforce++ or reinforce++-baseline: the advantage estimator.</summary>
    public string Algo { get; init; } = "grpo";
    /// <summary>Rollout-update iterations (each samples a fresh prompt batch).</summary>
    [Range(1, Check.MaxSteps)] public int Iterations { get; init; } = 60;
    /// <summary>Prompts per iteration; each is sampled <see cref="NumGenerations"/> times.</summary>
    [Range(1, Check.MaxBatch)] public int BatchSize { get; init; } = 16;
    /// <summary>G: completions per prompt (a group). TRL's default is 8.</summary>
    [Range(1, 4096)] public int NumGenerations { get; init; } = 8;
    /// <summary>Optimizer steps per pass over the batch x G completions (each a shuffled minibatch).</summary>
    [Range(1, Check.MaxBatch)] public int NumMiniBatches { get; init; } = 4;
    /// <summary>mu: passes over each generated batch (TRL <c>num_iterations</c>).</summary>
    [Range(1, 1000)] public int NumIterations { get; init; } = 1;
    /// <summary>AdamW learning rate (TRL <c>learning_rate</c>, default 1e-6; see the README for why 3e-5 here).</summary>
    public double Lr { get; init; } = 3e-5;
    public double WeightDecay { get; init; } = 0.0;
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Weight of the per-token k3 KL(pi || pi_ref) in the loss; 0 (TRL's default) loads no reference model.</summary>
    public double Beta { get; init; } = 0.0;
    /// <summary>Weight of the k1 KL penalty folded into the reward (rloo: per sequence; reinforce++: per token); not with grpo.</summary>
    public double KlCoef { get; init; } = 0.0;
    /// <summary>Lower clip of the ratio, 1 - epsilon.</summary>
    public double Epsilon { get; init; } = 0.2;
    /// <summary>Upper clip 1 + epsilon_high; null = epsilon. DAPO's clip-higher: 0.28.</summary>
    public double? EpsilonHigh { get; init; }
    /// <summary>grpo, bnpo, dr_grpo or dapo (TRL's default).</summary>
    public LossAggregation LossType { get; init; } = LossAggregation.Dapo;
    /// <summary>group (TRL's default), batch or none (Dr. GRPO): what GRPO divides centred rewards by.</summary>
    public RewardScaling ScaleRewards { get; init; } = RewardScaling.Group;
    /// <summary>token (TRL's default) or sequence (GSPO).</summary>
    public RatioLevel ImportanceSamplingLevel { get; init; } = RatioLevel.Token;
    /// <summary>Completions that hit max_completion_length without EOS are left out of the loss (DAPO's overlong filtering).</summary>
    public bool MaskTruncatedCompletions { get; init; } = false;
    /// <summary>Groups whose rewards are all equal are dropped from the update (DAPO's dynamic sampling, without resampling).</summary>
    public bool DynamicSampling { get; init; } = false;
    /// <summary>Weight of the entropy bonus.</summary>
    public double EntCoef { get; init; } = 0.0;

    public double Temperature { get; init; } = 1.0;
    public int TopK { get; init; } = 0;
    public double TopP { get; init; } = 1.0;
    /// <summary>Cap on generated tokens per completion (TRL's default 256).</summary>
    [Range(1, Check.MaxLength)] public int MaxCompletionLength { get; init; } = 16;
    /// <summary>The <c>overlong</c> reward's soft-penalty zone before max_completion_length (DAPO's L_cache; default a quarter of it).</summary>
    public int? OverlongBufferLen { get; init; }
    /// <summary>The <c>overlong</c> reward's penalty at max_completion_length (default 1.0).</summary>
    public double OverlongPenaltyFactor { get; init; } = 1.0;
    /// <summary>The settings of the rewards that need more than a name (<c>overlong</c>).</summary>
    public Rewards.RewardOptions RewardOptions() => new() { MaxCompletionLength = MaxCompletionLength, OverlongBufferLen = OverlongBufferLen, OverlongPenaltyFactor = OverlongPenaltyFactor };
    /// <summary>Extra variables for a pretrained model's chat template, e.g. {"enable_thinking": false} for Qwen3.</summary>
    public Dictionary<string, System.Text.Json.JsonElement> ChatTemplateKwargs { get; init; } = [];
    public ComputeDevice Device { get; init; } = ComputeDevice.Cpu;
    public int Seed { get; init; } = 1;
    [Range(1, Check.MaxSteps)] public int CheckpointEvery { get; init; } = 10;
    [Range(1, Check.MaxCheckpoints)] public int KeepCheckpoints { get; init; } = 2;
    [Range(1, Check.MaxSteps)] public int MaxSkippedSteps { get; init; } = 10;

    /// <summary>With <c>--eval</c>: a held-out evaluation every this many iterations, which keeps <c>best/</c>.</summary>
    [Range(1, Check.MaxSteps)] public int EvalEvery { get; init; } = 10;
    /// <summary>A <c>model:</c> reward whose recorded held-out pair accuracy is below this is refused (near chance); 0 accepts any.</summary>
    public double MinRewardModelAccuracy { get; init; } = 0.6;
    /// <summary>The parsed <see cref="Algo"/> (after <see cref="Validate"/>).</summary>
    [JsonIgnore]
    public AdvantageEstimator Estimator => ParseAlgo(Algo);

    /// <summary>The <c>algo</c> names, in the order of <see cref="AdvantageEstimator"/>.</summary>
    public static readonly IReadOnlyList<string> AlgoNames = ["grpo", "rloo", "reinforce++", "reinforce++-baseline"];

    private static AdvantageEstimator ParseAlgo(string algo)
    {
        int i = AlgoNames.ToList().IndexOf(algo);
        if (i < 0) throw new PpoSharpException($"algo: '{algo}' is not supported (allowed: {string.Join(", ", AlgoNames)})");
        return (AdvantageEstimator)i;
    }

    /// <summary>The policy-loss settings of <see cref="PolicyLoss.Compute"/>.</summary>
    [JsonIgnore]
    public PolicyLossOptions LossOptions => new(Epsilon, EpsilonHigh, null, ImportanceSamplingLevel, LossType, Beta, MaxCompletionLength);

    /// <summary>Whether the rollout needs the reference model: a KL term in the loss or in the reward.</summary>
    [JsonIgnore]
    public bool NeedsReference => Beta > 0 || KlCoef > 0;

    /// <summary>
    /// The settings the shared rollout and update loop read, under PPO's names: one prompt batch of batch_size (expanded
    /// G times in the trainer), num_iterations epochs, epsilon as the clip range, max_completion_length as response_length.
    /// </summary>
    public PpoConfig Loop() => new()
    {
        Iterations = Iterations, BatchSize = BatchSize, NumMiniBatches = NumMiniBatches, NumPpoEpochs = NumIterations, Lr = Lr,
        WeightDecay = WeightDecay, MaxGradNorm = MaxGradNorm, KlCoef = KlCoef, Cliprange = Epsilon, EntCoef = EntCoef,
        Temperature = Temperature, TopK = TopK, TopP = TopP, ResponseLength = MaxCompletionLength, ChatTemplateKwargs = ChatTemplateKwargs,
        Device = Device, Seed = Seed, CheckpointEvery = CheckpointEvery, KeepCheckpoints = KeepCheckpoints, MaxSkippedSteps = MaxSkippedSteps,
        WhitenAdvantages = false, NormalizeReward = false, AdaptiveKl = false, LoraR = LoraR, LoraAlpha = LoraAlpha, LoraDropout = LoraDropout, LoraTargetModules = LoraTargetModules,
        GradientCheckpointing = GradientCheckpointing, Bf16 = Bf16,
    };

    public GrpoConfig Validate()
    {
        var estimator = ParseAlgo(Algo);
        Check.Positive(Iterations, "iterations");
        Check.Positive(BatchSize, "batch_size");
        Check.Positive(NumGenerations, "num_generations");
        if (NumGenerations < 2 && estimator != AdvantageEstimator.Reinforce)
            throw new PpoSharpException($"num_generations must be at least 2 for algo {Algo}: its baseline comes from the other completions of the same prompt (got {NumGenerations})");
        if (DynamicSampling && NumGenerations < 2)
            throw new PpoSharpException($"dynamic_sampling drops groups whose rewards are all equal: it needs num_generations >= 2 (got {NumGenerations})");
        Check.Positive(NumMiniBatches, "num_mini_batches");
        if (NumMiniBatches > BatchSize * NumGenerations)
            throw new PpoSharpException($"num_mini_batches ({NumMiniBatches}) must be at most batch_size x num_generations ({BatchSize * NumGenerations})");
        Check.Positive(NumIterations, "num_iterations");
        Check.Positive(Lr, "lr");
        Check.AtLeast(WeightDecay, 0, "weight_decay");
        Check.Positive(MaxGradNorm, "max_grad_norm");
        Check.AtLeast(Beta, 0, "beta");
        Check.AtLeast(KlCoef, 0, "kl_coef");
        if (KlCoef > 0 && estimator == AdvantageEstimator.Grpo)
            throw new PpoSharpException("kl_coef is a reward penalty of rloo and reinforce++; with algo grpo set beta (the KL term of the loss) instead");
        Check.AtLeast(EntCoef, 0, "ent_coef");
        Check.Positive(Temperature, "temperature");
        Check.AtLeast(TopK, 0, "top_k");
        if (!(TopP > 0 && TopP <= 1)) throw new PpoSharpException($"top_p must be in (0, 1] (got {TopP})");
        Check.Positive(MaxCompletionLength, "max_completion_length");
        Check.InRange(MinRewardModelAccuracy, 0, 1, "min_reward_model_accuracy");
        Check.Positive(EvalEvery, "eval_every");
        Check.Positive(CheckpointEvery, "checkpoint_every");
        Check.Positive(KeepCheckpoints, "keep_checkpoints");
        Check.Positive(MaxSkippedSteps, "max_skipped_steps");
        Lora.Validate();
        Rollout.Validate(Lora.Enabled);
        LossOptions.Validate();
        Check.Ranges(this);
        return this;
    }
}
