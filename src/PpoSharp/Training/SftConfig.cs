using System.ComponentModel.DataAnnotations;
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
    /// <summary>
    /// TRL's max_length with truncation: when set, a record longer than this many tokens is cut to them (its start kept)
    /// instead of stopping the run; at most the model's context_length. Unset, a record longer than the context is an error.
    /// </summary>
    [JsonPropertyOrder(1), Range(1, Check.MaxLength)] public int? MaxLength { get; init; }

    /// <summary>TRL's dataset_text_field: the column of a language-modelling record's text (default <c>text</c>).</summary>
    [JsonPropertyOrder(1)] public string DatasetTextField { get; init; } = "text";
    protected override string TextField => DatasetTextField;

    /// <summary>Tokenizer of a new model: char (alphabet from the data plus printable ASCII) or gpt2.</summary>
    [JsonPropertyOrder(1)] public TokenizerKind Tokenizer { get; init; } = TokenizerKind.Char;
    [JsonPropertyOrder(1), Range(2, Check.MaxLength)] public int ContextLength { get; init; } = 64;
    [JsonPropertyOrder(1), Range(1, 1024)] public int NLayer { get; init; } = 4;
    [JsonPropertyOrder(1), Range(1, 1024)] public int NHead { get; init; } = 4;
    [JsonPropertyOrder(1), Range(1, 65536)] public int DModel { get; init; } = 128;

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
    /// <summary>Upper bounds of the integer keys (<see cref="RangeAttribute"/> on each): far above any run a machine can
    /// make, far below where int arithmetic on them (batch x length, step counters) would overflow.</summary>
    public const int MaxSteps = 100_000_000, MaxBatch = 65_536, MaxLength = 1_048_576, MaxCheckpoints = 10_000;

    /// <summary>
    /// Checks every int property of <paramref name="config"/> that carries a <see cref="RangeAttribute"/>, naming the key
    /// and its range: "'steps' is out of range: expected an integer from 1 to 100000000 (got 0)".
    /// </summary>
    public static void Ranges(object config)
    {
        foreach (var p in config.GetType().GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance))
            if ((p.PropertyType == typeof(int) || p.PropertyType == typeof(int?)) && RangeOf(p) is var (min, max) && p.GetValue(config) is int v && (v < min || v > max))
                throw new PpoSharpException(OutOfRange(System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name), min, max, v.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    /// <summary>The [Range] of an int property, or null.</summary>
    public static (long Min, long Max)? RangeOf(System.Reflection.PropertyInfo p) =>
        p.GetCustomAttributes(typeof(RangeAttribute), true).FirstOrDefault() is RangeAttribute r ? (Convert.ToInt64(r.Minimum), Convert.ToInt64(r.Maximum)) : null;

    /// <summary>The one message of an integer key outside its range.</summary>
    public static string OutOfRange(string key, long min, long max, string got) => $"'{key}' is out of range: expected an integer from {min} to {max} (got {got})";

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
