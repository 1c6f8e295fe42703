using System.Text.Json;

namespace PpoSharp.Algorithms;

/// <summary>
/// Config-string names of the algorithm enums: the enum member in snake_case (<c>DrGrpo</c> is <c>dr_grpo</c>), the
/// spelling the JSON config already uses for enum values, and TRL's / OpenRLHF's names for these options.
/// </summary>
public static class OptionNames
{
    /// <summary>The config name of a value: <c>LossAggregation.DrGrpo</c> gives <c>"dr_grpo"</c>.</summary>
    public static string Of<T>(T value) where T : struct, Enum => JsonNamingPolicy.SnakeCaseLower.ConvertName(value.ToString());

    /// <summary>All config names of <typeparamref name="T"/>, in declaration order.</summary>
    public static IReadOnlyList<string> All<T>() where T : struct, Enum => Enum.GetValues<T>().Select(Of).ToList();

    /// <summary>
    /// The value whose config name is <paramref name="value"/> (exact match). Anything else throws a
    /// <see cref="PpoSharpException"/> naming <paramref name="key"/> and the allowed names.
    /// </summary>
    public static T Parse<T>(string key, string value) where T : struct, Enum
    {
        foreach (var v in Enum.GetValues<T>())
            if (Of(v) == value) return v;
        throw new PpoSharpException($"{key}: '{value}' is not supported (allowed: {string.Join(", ", All<T>())})");
    }
}
