using System.Text.Json.Serialization;
using PpoSharp.Models;

namespace PpoSharp.Training;

public enum TokenizerKind { Char, Gpt2 }

/// <summary>
/// Supervised fine-tuning settings (JSON keys in snake_case). Defaults train the default model on a few thousand
/// short chat records of a built-in task in about two minutes on 2 cores. The model-shape keys apply only when no
/// --init model is given.
/// </summary>
public sealed record SftConfig : TrainingConfig
{
    public SftConfig() => (Steps, Lr, WarmupSteps, EvalFraction, EvalEvery, CheckpointEvery) = (1200, 2e-3, 50, 0.05, 200, 200);

    /// <summary>
    /// Defaults for a pretrained (Hugging Face) model: TRL's SFT learning rate 2e-5, smaller batches and fewer steps for a
    /// CPU; the built-in defaults above would wreck a pretrained model's weights.
    /// </summary>
    public static SftConfig Pretrained => new() { Lr = 2e-5, BatchSize = 8, Steps = 200, WarmupSteps = 10, EvalEvery = 50, CheckpointEvery = 50 };

    // Order 1: the keys of this record come after the shared ones (in config.json and in "allowed:" lists).
    [JsonPropertyOrder(1)] public double Beta1 { get; init; } = 0.9;
    [JsonPropertyOrder(1)] public double Beta2 { get; init; } = 0.99;

    /// <summary>Tokenizer of a new model: char (alphabet from the data plus printable ASCII) or gpt2.</summary>
    [JsonPropertyOrder(1)] public TokenizerKind Tokenizer { get; init; } = TokenizerKind.Char;
    [JsonPropertyOrder(1)] public int ContextLength { get; init; } = 64;
    [JsonPropertyOrder(1)] public int NLayer { get; init; } = 4;
    [JsonPropertyOrder(1)] public int NHead { get; init; } = 4;
    [JsonPropertyOrder(1)] public int DModel { get; init; } = 128;

    public DecoderSpec ModelConfig(int vocabSize) => new DecoderSpec(vocabSize, ContextLength, NLayer, NHead, DModel).Validate();

    public SftConfig Validate()
    {
        ValidateShared();
        Check.InRange(Beta1, 0, 0.999999, "beta1");
        Check.InRange(Beta2, 0, 0.999999, "beta2");
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
