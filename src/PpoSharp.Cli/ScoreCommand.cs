using System.CommandLine;
using System.Globalization;
using PpoSharp.Rewards;
using PpoSharp.Training;

namespace PpoSharp.Cli;

/// <summary><c>score</c>: given completions scored by reward functions, no model needed.</summary>
internal static partial class Commands
{
    private static Command ScoreCommand(TextWriter output)
    {
        var reward = Required("--reward", "reward spec, e.g. math,format:0.2");
        var data = Required("--data", "records with a 'completion' beside the columns the rewards read (solution, ...)");
        var json = new Option<bool>("--json") { Description = "one JSON object a line: source, total and each function's part" };
        var set = new Option<string[]>("--set") { Description = "solution_column=NAME (default solution), max_completion_length, overlong_buffer_len, overlong_penalty_factor" };
        var split = TrainingOptions.SplitOption("--split", "--data", "train");
        var c = new Command("score", "scores given completions with the reward functions, no model needed") { reward, data, json, set, split };
        c.SetAction(r =>
        {
            var options = ConfigLoader.Load(new RewardOptions(), null, r.GetValue(set) ?? [], o => o.Validate());
            var results = Scoring.Run(RewardSpec.Parse(r.GetValue(reward)!, options: options), r.GetValue(data)!, options, r.GetValue(split));
            foreach (var s in results)
                output.WriteLine(r.GetValue(json) ? Scoring.ToJson(s)
                    : $"{s.Source}  total {F(s.Total)}  " + string.Join("  ", s.Parts.Select(p => $"{p.Key} {F(p.Value)}")));
            if (!r.GetValue(json)) output.WriteLine($"{results.Count} records, mean total {F(results.Average(s => s.Total))}");
            return 0;
        });
        return c;
    }

    private static string F(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);
}
