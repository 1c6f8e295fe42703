using System.Text.RegularExpressions;

namespace PpoSharp.Rewards;

/// <summary>
/// <c>format</c>: 1 when the whole completion matches the layout, else 0. The default is TRL's
/// <c>think_format_reward</c>: <c>&lt;think&gt;</c> at the start, one reasoning block closed by <c>&lt;/think&gt;</c>
/// (no second <c>&lt;think&gt;</c>), then anything. <c>format:REGEX</c> takes any layout: the regex must match the
/// whole completion (. matches line breaks); a match that runs past 100 ms scores 0.
/// </summary>
public sealed class FormatReward : IRewardFunction
{
    /// <summary>TRL's think_format_reward pattern.</summary>
    public const string ThinkPattern = @"<think>(?!.*<think>)(.*?)</think>.*";

    private readonly Regex _regex;

    public FormatReward(string? pattern = null)
    {
        Pattern = pattern;
        try { _regex = new Regex(@"\A(?:" + (pattern ?? ThinkPattern) + @")\z", RegexOptions.Singleline, TimeSpan.FromMilliseconds(100)); }
        catch (ArgumentException e) { throw new PpoSharpException($"--reward: format:{pattern} is not a valid regex ({e.Message})"); }
    }

    /// <summary>The layout given as <c>format:REGEX</c>, or null for TRL's think format.</summary>
    public string? Pattern { get; }

    public string Name => Pattern is null ? "format" : $"format:{Pattern}";

    public IReadOnlyList<double> Score(IReadOnlyList<RewardInput> batch) => batch.Select(x => Matches(x.Response) ? 1.0 : 0.0).ToArray();

    private bool Matches(string response)
    {
        try { return _regex.IsMatch(response); }
        catch (RegexMatchTimeoutException) { return false; }
    }
}
