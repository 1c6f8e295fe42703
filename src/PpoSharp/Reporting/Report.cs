using System.Net;
using System.Text;
using System.Text.Json;
using PpoSharp.Training;

namespace PpoSharp.Reporting;

/// <summary>
/// Writes <c>report.html</c> and <c>plots/*.png</c> into a run directory from its <c>metrics.jsonl</c> files (the run's
/// own, or those of <c>sft/</c>, <c>rm/</c> and <c>ppo/</c> in a demo run) and the demo's <c>summary.json</c>.
/// Missing keys leave a plot out, extra keys are ignored; model text is HTML-escaped; the page links only files
/// inside the run directory, so it opens offline.
/// </summary>
public static class Report
{
    public const string FileName = "report.html", SummaryFile = "summary.json", PlotDir = "plots";

    /// <summary>A plot: file name, title, and the (metric key, label) lines it draws.</summary>
    private sealed record PlotSpec(string File, string Title, (string Key, string Label)[] Lines);

    private static readonly PlotSpec[] PpoPlots =
    [
        new("ppo_reward.png", "PPO reward (mean score of sampled responses)", [("reward_mean", "reward"), ("gold_reward_mean", "gold reward")]),
        new("ppo_kl.png", "KL to the reference (nats per sequence)", [("kl", "kl")]),
        new("ppo_entropy.png", "policy entropy (nats per token)", [("entropy", "entropy")]),
        new("ppo_clipfrac.png", "clip fraction", [("clipfrac", "ratio clipped"), ("value_clipfrac", "value clipped")]),
        new("ppo_value_loss.png", "value loss", [("value_loss", "value loss")]),
        new("ppo_explained_variance.png", "explained variance of the critic", [("explained_variance", "explained variance")]),
    ];

    private static readonly PlotSpec[] SftPlots = [new("sft_loss.png", "SFT loss", [("loss", "train"), ("eval_loss", "held out")])];

    private static readonly PlotSpec[] RmPlots =
    [
        new("rm_loss.png", "reward-model loss", [("loss", "train"), ("eval_loss", "held out")]),
        new("rm_accuracy.png", "reward-model pair accuracy", [("accuracy", "train"), ("eval_accuracy", "held out")]),
    ];

    public static string Write(string runDir)
    {
        if (!Directory.Exists(runDir)) throw new PpoSharpException($"{runDir}: run directory not found");
        var stages = Stages(runDir);
        if (stages.Count == 0) throw new PpoSharpException($"{runDir}: no metrics.jsonl here or in sft/, rm/, ppo/");
        var plotDir = Path.Combine(runDir, PlotDir);
        Directory.CreateDirectory(plotDir);
        var html = new StringBuilder();
        html.Append($"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>PpoSharp report: {E(Path.GetFileName(Path.GetFullPath(runDir)))}</title>");
        html.Append("<style>body{font-family:sans-serif;max-width:1340px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}"
            + "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}td.n{text-align:right}img{width:640px;margin:4px}.ok{color:#070}.no{color:#a00}</style></head><body>");
        html.Append($"<h1>PpoSharp run: {E(runDir)}</h1>");
        AppendSummary(html, Path.Combine(runDir, SummaryFile));
        foreach (var (stage, metricsPath) in stages)
        {
            var rows = ReadRows(metricsPath);
            var specs = stage switch { "ppo" => PpoPlots, "rm" => RmPlots, _ => SftPlots };
            string xKey = stage == "ppo" ? "iteration" : "step";
            html.Append($"<h2>{E(stage.ToUpperInvariant())} ({rows.Count} {(stage == "ppo" ? "iterations" : "steps")})</h2><div>");
            foreach (var spec in specs)
            {
                var series = spec.Lines.Select(l => Plots.FromMetrics(rows, xKey, l.Key, l.Label)).OfType<Series>().ToList();
                if (series.Count == 0)
                {
                    html.Append($"<p>{E(spec.Title)}: not in the metrics.</p>");
                    continue;
                }
                Plots.Line(Path.Combine(plotDir, spec.File), spec.Title, xKey, series);
                html.Append($"<img src=\"{PlotDir}/{spec.File}\" alt=\"{E(spec.Title)}\">");
            }
            html.Append("</div>");
        }
        html.Append("</body></html>");
        var path = Path.Combine(runDir, FileName);
        File.WriteAllText(path, html.ToString());
        return path;
    }

    /// <summary>(stage, metrics file) pairs: a demo run's sft/rm/ppo, or the directory's own metrics (stage from config.json).</summary>
    private static List<(string Stage, string Path)> Stages(string runDir)
    {
        var list = new List<(string, string)>();
        foreach (var stage in new[] { "sft", "rm", "ppo" })
        {
            var p = Path.Combine(runDir, stage, MetricsWriter.FileName);
            if (File.Exists(p)) list.Add((stage, p));
        }
        var own = Path.Combine(runDir, MetricsWriter.FileName);
        if (list.Count == 0 && File.Exists(own)) list.Add((GuessStage(runDir, own), own));
        return list;
    }

    private static string GuessStage(string runDir, string metricsPath)
    {
        var configPath = Path.Combine(runDir, RunDirectory.ConfigFile);
        if (File.Exists(configPath) && File.ReadAllText(configPath).Contains("ForSequenceClassification", StringComparison.Ordinal)) return "rm";
        var first = File.ReadLines(metricsPath).FirstOrDefault() ?? "";
        return first.Contains("\"iteration\"", StringComparison.Ordinal) ? "ppo" : "sft";
    }

    /// <summary>Rows of a metrics file; a line that is not a JSON object is an error naming the file and line.</summary>
    private static List<Dictionary<string, JsonElement>> ReadRows(string path)
    {
        var rows = new List<Dictionary<string, JsonElement>>();
        int n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try { rows.Add(JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(line) ?? throw new JsonException("null")); }
            catch (JsonException) { throw new PpoSharpException($"{path}:{n}: not a JSON object"); }
        }
        return rows;
    }

    private static void AppendSummary(StringBuilder html, string path)
    {
        if (!File.Exists(path)) return;
        var summary = JsonSerializer.Deserialize<DemoSummary>(File.ReadAllText(path), Json.Options);
        if (summary is null) return;
        html.Append($"<p>Task <b>{E(summary.Task)}</b>; {summary.EvalPrompts} held-out prompts, greedy decoding; PPO reward: {E(summary.Reward)}.</p>");
        html.Append("<table><tr><th>metric</th><th>SFT</th><th>PPO</th></tr>");
        foreach (var (name, sft, ppo) in summary.Table)
            html.Append($"<tr><td>{E(name)}</td><td class=\"n\">{E(sft)}</td><td class=\"n\">{E(ppo)}</td></tr>");
        html.Append("</table><h2>Samples</h2><table><tr><th>prompt</th><th>solution</th><th>SFT</th><th>PPO</th></tr>");
        foreach (var s in summary.Samples)
            html.Append($"<tr><td>{E(s.Prompt)}</td><td>{E(s.Solution)}</td><td class=\"{(s.SftOk ? "ok" : "no")}\">{E(s.Sft)}</td><td class=\"{(s.PpoOk ? "ok" : "no")}\">{E(s.Ppo)}</td></tr>");
        html.Append("</table>");
    }

    private static string E(string? text) => WebUtility.HtmlEncode(text ?? "");
}

/// <summary>What the demo saves as <c>summary.json</c> for the report: the table rows and side-by-side samples.</summary>
public sealed record DemoSummary(string Task, int EvalPrompts, string Reward, List<TableRow> Table, List<DemoSample> Samples);

public sealed record TableRow(string Metric, string Sft, string Ppo);

public sealed record DemoSample(string Prompt, string Solution, string Sft, bool SftOk, string Ppo, bool PpoOk);
