using System.ComponentModel.DataAnnotations;

namespace PpoSharp.Training;

/// <summary>
/// Settings shared by the supervised trainers, SFT and reward-model training (JSON keys in snake_case): the
/// optimizer schedule, the held-out split, checkpoints and the non-finite guard. Each trainer's record sets the
/// defaults that differ (steps, lr, warm-up, eval and checkpoint intervals) and adds its own keys.
/// </summary>
public abstract record TrainingConfig : LoraKeys
{
    /// <summary>Optimizer steps.</summary>
    [Range(1, Check.MaxSteps)] public int Steps { get; init; }
    /// <summary>Sequences (SFT) or preference pairs (reward model, DPO) per micro-batch: one forward and backward pass.</summary>
    [Range(1, Check.MaxBatch)] public int BatchSize { get; init; } = 32;
    /// <summary>
    /// TRL's gradient_accumulation_steps: micro-batches of batch_size whose gradients add up before one optimizer step. The
    /// loss of a step is normalised over all its micro-batches (tokens for SFT, pairs for rm and DPO), so k micro-batches of
    /// b give the update of one batch of k x b.
    /// </summary>
    [Range(1, Check.MaxBatch)] public int GradientAccumulationSteps { get; init; } = 1;
    /// <summary>
    /// TRL's num_train_epochs: when set, the data is read in epochs (each a new shuffle, every training record once, the
    /// last micro-batch of an epoch shorter when batch_size does not divide the records) and steps becomes
    /// ceil(num_train_epochs x ceil(ceil(records / batch_size) / gradient_accumulation_steps)), as transformers' Trainer
    /// counts them; unset, each step draws its micro-batches at random (with replacement) and steps is the run's length.
    /// </summary>
    public double? NumTrainEpochs { get; init; }
    /// <summary>Peak learning rate (AdamW).</summary>
    public double Lr { get; init; }
    /// <summary>Linear warm-up steps, then cosine decay to <see cref="MinLrRatio"/> x lr.</summary>
    [Range(0, Check.MaxSteps)] public int WarmupSteps { get; init; }
    public double MinLrRatio { get; init; } = 0.1;
    /// <summary>TRL's warmup_ratio: when set, the warm-up is ceil(warmup_ratio x steps) steps instead of warmup_steps.</summary>
    public double? WarmupRatio { get; init; }
    /// <summary>The warm-up steps the schedule uses: from <see cref="WarmupRatio"/> when set (rounded up, as transformers does), else <see cref="WarmupSteps"/>.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int Warmup => WarmupRatio is double r ? (int)Math.Ceiling(r * Steps) : WarmupSteps;
    /// <summary>Decoupled weight decay on matrices and embeddings (not on biases and LayerNorm).</summary>
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Gradient-norm clipping threshold.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>Share of records held out for evaluation.</summary>
    public double EvalFraction { get; init; }
    /// <summary>Held-out evaluation every this many steps (and at the end).</summary>
    [Range(1, Check.MaxSteps)] public int EvalEvery { get; init; }
    public int Seed { get; init; } = 1;
    /// <summary>Extra variables for a pretrained model's chat template, e.g. {"enable_thinking": false} for Qwen3.</summary>
    public Dictionary<string, System.Text.Json.JsonElement> ChatTemplateKwargs { get; init; } = [];
    /// <summary>Where the model and batches live: cpu, or cuda with TorchSharp's CUDA package.</summary>
    public Models.ComputeDevice Device { get; init; } = Models.ComputeDevice.Cpu;
    /// <summary>Write a checkpoint (model, optimizer, step) every this many steps.</summary>
    [Range(1, Check.MaxSteps)] public int CheckpointEvery { get; init; }
    [Range(1, Check.MaxCheckpoints)] public int KeepCheckpoints { get; init; } = 2;
    /// <summary>Steps in a row with a non-finite loss or gradient norm before the run stops (with a checkpoint).</summary>
    [Range(1, Check.MaxSteps)] public int MaxSkippedSteps { get; init; } = 10;

    /// <summary>Optimizer steps per epoch of <paramref name="records"/> training records: ceil(ceil(records / batch_size) / gradient_accumulation_steps).</summary>
    public int StepsPerEpoch(int records) => CeilDiv(CeilDiv(records, BatchSize), GradientAccumulationSteps);

    /// <summary>
    /// Steps from <see cref="NumTrainEpochs"/> for <paramref name="records"/> training records (see there), or
    /// <see cref="Steps"/> when it is unset; an error naming num_train_epochs when that is above <see cref="Check.MaxSteps"/>.
    /// </summary>
    public int StepsFor(int records)
    {
        if (NumTrainEpochs is not double epochs) return Steps;
        double steps = Math.Ceiling(epochs * StepsPerEpoch(records));
        if (steps > Check.MaxSteps) throw new PpoSharpException($"num_train_epochs {epochs:G} makes {steps:G} steps over {records} records, more than {Check.MaxSteps}");
        return (int)steps;
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    /// <summary>Range checks of the shared keys; each trainer's Validate() calls it and checks its own.</summary>
    protected void ValidateShared()
    {
        Check.Positive(Steps, "steps");
        Check.Positive(BatchSize, "batch_size");
        Check.Positive(Lr, "lr");
        Check.AtLeast(WarmupSteps, 0, "warmup_steps");
        if (NumTrainEpochs is double epochs) Check.Positive(epochs, "num_train_epochs");
        Check.InRange(MinLrRatio, 0, 1, "min_lr_ratio");
        if (WarmupRatio is double ratio) Check.InRange(ratio, 0, 1, "warmup_ratio");
        Check.AtLeast(WeightDecay, 0, "weight_decay");
        Check.Positive(MaxGradNorm, "max_grad_norm");
        Check.InRange(EvalFraction, 0, 0.5, "eval_fraction");
        Check.Positive(EvalEvery, "eval_every");
        Check.Positive(CheckpointEvery, "checkpoint_every");
        Check.Positive(KeepCheckpoints, "keep_checkpoints");
        Check.Positive(MaxSkippedSteps, "max_skipped_steps");
        Lora.Validate();
        Check.Ranges(this);
    }
}
