using PpoSharp.Models;

namespace PpoSharp.Training;

public enum TokenizerKind { Char, Gpt2 }

/// <summary>
/// Supervised fine-tuning settings (JSON keys in snake_case). Defaults train the default model on a few thousand
/// short chat records of a built-in task in about two minutes on 2 cores. The model-shape keys apply only when no
/// --init model is given.
/// </summary>
public sealed record SftConfig
{
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 1200;
    /// <summary>Sequences per step.</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Peak learning rate (AdamW).</summary>
    public double Lr { get; init; } = 2e-3;
    /// <summary>Linear warm-up steps, then cosine decay to <see cref="MinLrRatio"/> x lr.</summary>
    public int WarmupSteps { get; init; } = 50;
    public double MinLrRatio { get; init; } = 0.1;
    /// <summary>Decoupled weight decay on matrices and embeddings (not on biases and LayerNorm).</summary>
    public double WeightDecay { get; init; } = 0.1;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.99;
    /// <summary>Gradient-norm clipping threshold.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>Share of records held out for the eval loss.</summary>
    public double EvalFraction { get; init; } = 0.05;
    /// <summary>Held-out loss every this many steps (and at the end).</summary>
    public int EvalEvery { get; init; } = 200;
    public int Seed { get; init; } = 1;
    /// <summary>Write a checkpoint (model, optimizer, step) every this many steps.</summary>
    public int CheckpointEvery { get; init; } = 200;
    public int KeepCheckpoints { get; init; } = 2;
    /// <summary>Steps in a row with a non-finite loss or gradient norm before the run stops (with a checkpoint).</summary>
    public int MaxSkippedSteps { get; init; } = 10;

    /// <summary>Tokenizer of a new model: char (alphabet from the data plus printable ASCII) or gpt2.</summary>
    public TokenizerKind Tokenizer { get; init; } = TokenizerKind.Char;
    public int ContextLength { get; init; } = 64;
    public int NLayer { get; init; } = 4;
    public int NHead { get; init; } = 4;
    public int DModel { get; init; } = 128;

    public GptConfig ModelConfig(int vocabSize) => new GptConfig(vocabSize, ContextLength, NLayer, NHead, DModel).Validate();

    public SftConfig Validate()
    {
        Check.Positive(Steps, "steps");
        Check.Positive(BatchSize, "batch_size");
        Check.Positive(Lr, "lr");
        Check.AtLeast(WarmupSteps, 0, "warmup_steps");
        Check.InRange(MinLrRatio, 0, 1, "min_lr_ratio");
        Check.AtLeast(WeightDecay, 0, "weight_decay");
        Check.InRange(Beta1, 0, 0.999999, "beta1");
        Check.InRange(Beta2, 0, 0.999999, "beta2");
        Check.Positive(MaxGradNorm, "max_grad_norm");
        Check.InRange(EvalFraction, 0, 0.5, "eval_fraction");
        Check.Positive(EvalEvery, "eval_every");
        Check.Positive(CheckpointEvery, "checkpoint_every");
        Check.Positive(KeepCheckpoints, "keep_checkpoints");
        Check.Positive(MaxSkippedSteps, "max_skipped_steps");
        ModelConfig(2);
        return this;
    }
}

/// <summary>Range checks that name the config key.</summary>
public static class Check
{
    public static void Positive(double v, string key)
    {
        if (!(v > 0) || !double.IsFinite(v)) throw new PpoSharpException($"{key} must be > 0 (got {v})");
    }

    public static void AtLeast(double v, double min, string key)
    {
        if (!(v >= min) || !double.IsFinite(v)) throw new PpoSharpException($"{key} must be >= {min} (got {v})");
    }

    public static void InRange(double v, double min, double max, string key)
    {
        if (!(v >= min && v <= max)) throw new PpoSharpException($"{key} must be in [{min}, {max}] (got {v})");
    }
}
