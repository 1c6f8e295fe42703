using PpoSharp.Algorithms;
using System.ComponentModel.DataAnnotations;
using PpoSharp.Models;

namespace PpoSharp.Training;

/// <summary>
/// PPO settings, with TRL's names where TRL has one. Defaults fit the built-in tasks on 2 cores (a run of a few minutes).
/// </summary>
public sealed record PpoConfig : RolloutKeys
{
    /// <summary>
    /// Defaults for a pretrained (Hugging Face) model: TRL's PPO learning rate 3e-6, batches of 16 prompts, 64-token
    /// responses and 20 iterations, sized for a CPU.
    /// </summary>
    public static PpoConfig Pretrained => new() { Lr = 3e-6, BatchSize = 16, ResponseLength = 64, Iterations = 20, CheckpointEvery = 5 };

    /// <summary>Rollout-update iterations (each samples a fresh prompt batch).</summary>
    [Range(1, Check.MaxSteps)] public int Iterations { get; init; } = 60;
    /// <summary>Prompts per iteration (the rollout batch).</summary>
    [Range(1, Check.MaxBatch)] public int BatchSize { get; init; } = 64;
    /// <summary>Minibatches per PPO epoch; must divide batch_size.</summary>
    [Range(1, Check.MaxBatch)] public int NumMiniBatches { get; init; } = 4;
    /// <summary>Passes over the rollout buffer per iteration.</summary>
    [Range(1, 1000)] public int NumPpoEpochs { get; init; } = 4;
    /// <summary>AdamW learning rate of actor and critic.</summary>
    public double Lr { get; init; } = 1e-4;
    public double WeightDecay { get; init; } = 0.0;
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Initial KL coefficient beta of the per-token penalty -beta * KL_t.</summary>
    public double KlCoef { get; init; } = 0.05;
    public KlEstimator KlEstimator { get; init; } = KlEstimator.K1;
    /// <summary>
    /// Adapt beta towards <see cref="KlTarget"/> (Ziegler et al. 2019) instead of keeping it fixed; unset (null), on for a
    /// reward with a <c>model:</c> part (whose scores can be pushed up far from the reference) and off for rules.
    /// </summary>
    public bool? AdaptiveKl { get; init; }
    /// <summary>With <c>--eval</c>: a held-out evaluation every this many iterations, which keeps <c>best/</c>.</summary>
    [Range(1, Check.MaxSteps)] public int EvalEvery { get; init; } = 10;
    /// <summary>A <c>model:</c> reward whose recorded held-out pair accuracy is below this is refused (near chance); 0 accepts any.</summary>
    public double MinRewardModelAccuracy { get; init; } = 0.6;
    /// <summary>Normalise each <c>model:</c> reward's scores by their running mean and std (rules keep their scale).</summary>
    public bool NormalizeReward { get; init; } = true;
    /// <summary>Target KL (per sequence) of the adaptive controller.</summary>
    public double KlTarget { get; init; } = 1.0;
    /// <summary>
    /// Horizon of the adaptive controller, in samples: beta moves at most 0.2 n / horizon per batch of n. TRL keeps 10000, sized
    /// for runs of hundreds of thousands of samples; a PpoSharp run of 60 x 64 sees 3,840, and 256 lets beta grow up to
    /// 5 % an iteration (18x over such a run) when KL overshoots.
    /// </summary>
    public double KlHorizon { get; init; } = 256;
    /// <summary>Stop the epoch loop of an iteration early once the mean approx KL exceeds this; 0 = never.</summary>
    public double TargetKl { get; init; } = 0.0;

    /// <summary>PPO's epsilon: the ratio is clipped to [1 - eps, 1 + eps].</summary>
    public double Cliprange { get; init; } = 0.2;
    /// <summary>Value clipping range around the rollout's values.</summary>
    public double CliprangeValue { get; init; } = 0.2;
    /// <summary>c1: weight of the value loss.</summary>
    public double VfCoef { get; init; } = 0.1;
    /// <summary>c2: weight of the entropy bonus.</summary>
    public double EntCoef { get; init; } = 0.0;
    public double Gamma { get; init; } = 1.0;
    public double Lam { get; init; } = 0.95;
    /// <summary>Whiten advantages over valid tokens.</summary>
    public bool WhitenAdvantages { get; init; } = true;
    /// <summary>Whiten per-token rewards (mean kept) before GAE.</summary>
    public bool WhitenRewards { get; init; } = false;
    /// <summary>Subtracted from the score of a response that hit the length cap without EOS; 0 = off.</summary>
    public double MissingEosPenalty { get; init; } = 0.0;
    /// <summary>Scores are clipped to [-score_clip, score_clip]; 0 = off.</summary>
    public double ScoreClip { get; init; } = 0.0;

    public double Temperature { get; init; } = 1.0;
    public int TopK { get; init; } = 0;
    public double TopP { get; init; } = 1.0;
    /// <summary>Cap on generated tokens per response.</summary>
    [Range(1, Check.MaxLength)] public int ResponseLength { get; init; } = 16;
    public CriticArrangement Critic { get; init; } = CriticArrangement.Separate;
    /// <summary>Extra variables for a pretrained model's chat template, e.g. {"enable_thinking": false} for Qwen3.</summary>
    public Dictionary<string, System.Text.Json.JsonElement> ChatTemplateKwargs { get; init; } = [];
    /// <summary>Where actor, reference, critic and batches live: cpu, or cuda with TorchSharp's CUDA package.</summary>
    public ComputeDevice Device { get; init; } = ComputeDevice.Cpu;
    public int Seed { get; init; } = 1;

    /// <summary>Write a checkpoint (models, optimizer, RNG and controller state, data position) every this many iterations.</summary>
    [Range(1, Check.MaxSteps)] public int CheckpointEvery { get; init; } = 10;
    /// <summary>Checkpoints kept on disk (the newest).</summary>
    [Range(1, Check.MaxCheckpoints)] public int KeepCheckpoints { get; init; } = 2;
    /// <summary>Optimizer steps in a row with a non-finite loss or gradient norm before the run stops (with a checkpoint).</summary>
    [Range(1, Check.MaxSteps)] public int MaxSkippedSteps { get; init; } = 10;

    public int MiniBatchSize => BatchSize / NumMiniBatches;

    public PpoConfig Validate()
    {
        Check.Positive(Iterations, "iterations");
        Check.Positive(BatchSize, "batch_size");
        Check.Positive(NumMiniBatches, "num_mini_batches");
        if (BatchSize % NumMiniBatches != 0)
            throw new PpoSharpException($"num_mini_batches ({NumMiniBatches}) must divide batch_size ({BatchSize})");
        Check.Positive(NumPpoEpochs, "num_ppo_epochs");
        Check.Positive(Lr, "lr");
        Check.AtLeast(WeightDecay, 0, "weight_decay");
        Check.Positive(MaxGradNorm, "max_grad_norm");
        Check.AtLeast(KlCoef, 0, "kl_coef");
        Check.Positive(KlTarget, "kl_target");
        Check.Positive(KlHorizon, "kl_horizon");
        Check.AtLeast(TargetKl, 0, "target_kl");
        Check.Positive(Cliprange, "cliprange");
        Check.Positive(CliprangeValue, "cliprange_value");
        Check.AtLeast(VfCoef, 0, "vf_coef");
        Check.AtLeast(EntCoef, 0, "ent_coef");
        Check.InRange(MinRewardModelAccuracy, 0, 1, "min_reward_model_accuracy");
        Check.Positive(EvalEvery, "eval_every");
        Check.InRange(Gamma, 0, 1, "gamma");
        Check.InRange(Lam, 0, 1, "lam");
        Check.AtLeast(MissingEosPenalty, 0, "missing_eos_penalty");
        Check.AtLeast(ScoreClip, 0, "score_clip");
        Check.Positive(Temperature, "temperature");
        Check.AtLeast(TopK, 0, "top_k");
        if (!(TopP > 0 && TopP <= 1)) throw new PpoSharpException($"top_p must be in (0, 1] (got {TopP})");
        Check.Positive(ResponseLength, "response_length");
        Check.Positive(CheckpointEvery, "checkpoint_every");
        Check.Positive(KeepCheckpoints, "keep_checkpoints");
        Check.Positive(MaxSkippedSteps, "max_skipped_steps");
        Lora.Validate();
        Rollout.Validate(Lora.Enabled);
        Check.Ranges(this);
        return this;
    }
}
