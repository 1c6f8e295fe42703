using System.Net;
using System.Text;
using System.Text.Json;
using PpoSharp.Training;

namespace PpoSharp.Reporting;

/// <summary>
/// Writes <c>report.html</c> and <c>plots/*.png</c> into a run directory from its <c>metrics.jsonl</c> files (the run's
/// own, or those of <c>sft/</c>, <c>rm/</c>, <c>ppo/</c>, <c>grpo/</c> and <c>dpo/</c> in a demo run), each run's settings
/// (<c>job.json</c>, <c>training_config.json</c>) and held-out results (<c>summary.json</c>, the last <c>eval_*</c>
/// metrics), and the demo's <c>summary.json</c>. Missing keys leave a plot out, extra keys are ignored; model text is
/// HTML-escaped; the page links only files inside the run directory, so it opens offline.
/// </summary>
public static class Report
{
    public const string FileName = "report.html", SummaryFile = "summary.json", PlotDir = "plots";

    /// <summary>
    /// A plot: file name, title, y-axis label, the (metric key, label) lines on the left axis, and an optional line on a
    /// right axis of its own (a metric on another scale, such as the gold reward beside a reward model's score).
    /// </summary>
    private sealed record PlotSpec(string File, string Title, string YLabel, (string Key, string Label)[] Lines,
        (string Key, string Label, string YLabel)? Right = null)
    {
        /// <summary>Each line rescaled to [0, 1] over the run, so that metrics of different scales share one axis.</summary>
        public bool Normalized { get; init; }
        /// <summary>The left lines are shares (rates, accuracies): a fixed [0, 1] axis.</summary>
        public bool Share { get; init; }
        /// <summary>The right line is a share: a fixed [0, 1] right axis.</summary>
        public bool RightShare { get; init; }
    }

    /// <summary>A reward model's raw score and the gold rule on one axis, each min-max scaled: over-optimisation is where they part.</summary>
    private static PlotSpec ProxyVsGold(string stage) => new($"{stage}_proxy_vs_gold.png", "proxy reward vs gold reward (each rescaled to its own range)",
        "scaled: 0 lowest, 1 highest", [("proxy_score_mean", "reward model score (raw)"), ("gold_reward_mean", "gold reward")]) { Normalized = true };

    private static readonly PlotSpec[] PpoPlots =
    [
        new("ppo_reward.png", "PPO reward", "reward_mean (score per response)", [("reward_mean", "reward")],
            ("gold_reward_mean", "gold reward", "gold_reward_mean (rule score)")),
        ProxyVsGold("ppo"),
        new("ppo_kl.png", "KL to the reference", "nats per sequence", [("kl", "kl")]),
        new("ppo_eos_rate.png", "responses ending with EOS", "share of responses", [("eos_rate", "eos rate")]) { Share = true },
        new("ppo_entropy.png", "policy entropy", "nats per token", [("entropy", "entropy")]),
        new("ppo_clipfrac.png", "clip fraction", "share of tokens clipped", [("clipfrac", "ratio clipped"), ("value_clipfrac", "value clipped")]) { Share = true },
        new("ppo_value_loss.png", "value loss", "1/2 squared error per token", [("value_loss", "value loss")]),
        new("ppo_explained_variance.png", "explained variance of the critic", "1 - Var(R - V) / Var(R)",
            [("explained_variance", "explained variance")]),
    ];

    private static readonly PlotSpec[] SftPlots =
        [new("sft_loss.png", "SFT loss", "cross-entropy (nats per token)", [("loss", "train"), ("eval_loss", "held out")])];

    private static readonly PlotSpec[] RmPlots =
    [
        new("rm_loss.png", "reward-model loss", "Bradley-Terry loss (nats per pair)", [("loss", "train"), ("eval_loss", "held out")]),
        new("rm_accuracy.png", "reward-model pair accuracy", "accuracy (share of pairs ranked right)",
            [("accuracy", "train"), ("eval_accuracy", "held out")]) { Share = true },
    ];

    /// <summary>GRPO/RLOO/REINFORCE++ (TRL's GRPOTrainer keys); the per-function reward plot is built from the keys found (<see cref="GrpoSpecs"/>).</summary>
    private static readonly PlotSpec[] GrpoPlots =
    [
        new("grpo_reward.png", "GRPO reward", "reward (mean score per completion)", [("reward", "reward")],
            ("gold_reward_mean", "gold reward", "gold_reward_mean (rule score)")),
        ProxyVsGold("grpo"),
        new("grpo_reward_std.png", "reward spread within groups", "reward_std (score, mean over groups)", [("reward_std", "reward std")],
            ("frac_reward_zero_std", "groups with zero std", "share of groups, all rewards equal")) { RightShare = true },
        new("grpo_kl.png", "KL to the reference", "k3 estimate (nats per token)", [("kl", "kl")]),
        new("grpo_entropy.png", "policy entropy", "nats per token", [("entropy", "entropy")]),
        new("grpo_clip_ratio.png", "clipped ratios", "share of tokens clipped",
            [("clip_ratio/low_mean", "low (A < 0, ratio < 1 - eps)"), ("clip_ratio/high_mean", "high (A > 0, ratio > 1 + eps_high)"),
             ("clip_ratio/region_mean", "region (either)")]) { Share = true },
        new("grpo_completion_length.png", "completion length", "tokens per completion (mean)", [("completions/mean_length", "mean length")],
            ("completions/clipped_ratio", "clipped", "share of completions cut at max length")) { RightShare = true },
    ];

    /// <summary>DPO (TRL's DPOTrainer keys): train every step, held out (<c>eval_</c>) every eval_every steps.</summary>
    private static readonly PlotSpec[] DpoPlots =
    [
        new("dpo_loss.png", "DPO loss", "loss (nats per pair)", [("loss", "train"), ("eval_loss", "held out")]),
        new("dpo_accuracy.png", "implicit-reward accuracy", "share of pairs with chosen reward > rejected",
            [("rewards/accuracies", "train"), ("eval_rewards/accuracies", "held out")]) { Share = true },
        new("dpo_margins.png", "implicit-reward margin", "chosen - rejected reward",
            [("rewards/margins", "train"), ("eval_rewards/margins", "held out")]),
        new("dpo_rewards.png", "implicit rewards, chosen vs rejected", "beta x log(pi / pi_ref) per response",
            [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected"), ("eval_rewards/chosen", "chosen, held out"), ("eval_rewards/rejected", "rejected, held out")]),
        new("dpo_logps.png", "policy log-probs, chosen vs rejected", "log pi(response), nats",
            [("logps/chosen", "chosen"), ("logps/rejected", "rejected"), ("eval_logps/chosen", "chosen, held out"), ("eval_logps/rejected", "rejected, held out")]),
    ];

    /// <summary>The stages a demo run may hold, as subdirectories, in report order.</summary>
    private static readonly string[] StageDirs = ["sft", "rm", "ppo", "grpo", "dpo", "ppo-lora", "grpo-lora"];

    /// <summary>The trainer of a stage: ppo-lora is a ppo run, grpo-lora a grpo one.</summary>
    private static string Kind(string stage) => stage.Split('-')[0];

    /// <summary>Where a per-function reward is logged: <c>rewards/NAME/mean</c> (its <c>/std</c> beside it).</summary>
    private const string FunctionRewardPrefix = "rewards/", FunctionRewardSuffix = "/mean";

    public static string Write(string runDir)
    {
        if (!Directory.Exists(runDir)) throw new PpoSharpException($"{runDir}: run directory not found");
        var stages = Stages(runDir);
        if (stages.Count == 0) throw new PpoSharpException($"{runDir}: no metrics.jsonl here or in {string.Join(", ", StageDirs.Select(d => d + "/"))}");
        Directory.CreateDirectory(Path.Combine(runDir, PlotDir));
        var html = new StringBuilder();
        html.Append($"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>PpoSharp report: {E(Path.GetFileName(Path.GetFullPath(runDir)))}</title>");
        html.Append("<style>.warning{color:#a40000;font-weight:bold}body{font-family:sans-serif;max-width:1340px;margin:2em auto;padding:0 1em;overflow-wrap:break-word}table{border-collapse:collapse;margin:1em 0}"
            + "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;overflow-wrap:anywhere}td.n{text-align:right}td.k{color:#555}"
            + ".plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}.plots img{width:100%;height:auto}"
            + ".ok{color:#070}.no{color:#a00}</style></head><body>");
        html.Append($"<h1>PpoSharp run: {E(runDir)}</h1>");
        html.Append("<p>Per-step curves are smoothed with a debiased exponential moving average (TensorBoard's smoothing; "
            + "the weight, chosen from the number of points, is in each legend; short curves are not smoothed) over the raw values "
            + "drawn faint; held-out values are drawn unsmoothed, with markers.</p>");
        if (stages.All(s => s.Dir != runDir)) AppendSummary(html, Path.Combine(runDir, SummaryFile));
        foreach (var (stage, dir) in stages) AppendStage(html, runDir, stage, dir);
        html.Append("</body></html>");
        var path = Path.Combine(runDir, FileName);
        File.WriteAllText(path, html.ToString());
        return path;
    }

    /// <summary>A stage's section: its settings, held-out results and plots (written to the run's plots/).</summary>
    private static void AppendStage(StringBuilder html, string runDir, string stage, string dir)
    {
        var rows = ReadRows(Path.Combine(dir, MetricsWriter.FileName));
        html.Append($"<h2>{E(stage.ToUpperInvariant())} ({rows.Count} {(ByIteration(stage) ? "iterations" : "steps")})</h2>");
        AppendSettings(html, dir);
        AppendSummary(html, Path.Combine(dir, SummaryFile));
        AppendLastHeldOut(html, rows, XKey(stage));
        if (ByIteration(stage))
            foreach (var warning in Training.RunWarnings.Of(rows)) html.Append($"<p class=\"warning\">warning: {E(warning)}</p>");
        html.Append("<div class=\"plots\">");
        foreach (var (file, _, chart) in Charts(stage, rows))
        {
            if (chart is null) continue;                                             // a plot whose metrics this run does not log
            Plots.Draw(Path.Combine(runDir, PlotDir, file), chart);
            html.Append($"<img src=\"{PlotDir}/{file}\" alt=\"{E(chart.Title)}\">");
        }
        html.Append("</div>");
    }

    /// <summary>Online RL logs a row per iteration (rollout + update), the other trainers one per optimizer step.</summary>
    private static bool ByIteration(string stage) => Kind(stage) is "ppo" or "grpo";

    private static string XKey(string stage) => ByIteration(stage) ? "iteration" : "step";

    /// <summary>Each plot of <paramref name="stage"/> as (file, title, chart); the chart is null when none of its metrics was logged.</summary>
    internal static IEnumerable<(string File, string Title, Chart? Chart)> Charts(string stage, IReadOnlyList<Dictionary<string, JsonElement>> rows)
    {
        var specs = Kind(stage) switch { "ppo" => PpoPlots, "rm" => RmPlots, "grpo" => GrpoSpecs(rows), "dpo" => DpoPlots, _ => SftPlots };
        return specs.Select(spec => (spec.File, spec.Title, ChartOf(spec, rows, XKey(stage))));
    }

    /// <summary>
    /// GRPO's plots, the per-function rewards second: one line per <c>rewards/NAME/mean</c> key in the rows, in the order
    /// first logged (a run with one reward function draws one line, the same as the total).
    /// </summary>
    private static PlotSpec[] GrpoSpecs(IReadOnlyList<Dictionary<string, JsonElement>> rows)
    {
        var lines = rows.SelectMany(r => r.Keys).Distinct()
            .Where(k => k.StartsWith(FunctionRewardPrefix, StringComparison.Ordinal) && k.EndsWith(FunctionRewardSuffix, StringComparison.Ordinal)
                && k.Length > FunctionRewardPrefix.Length + FunctionRewardSuffix.Length)
            .Select(k => (k, k[FunctionRewardPrefix.Length..^FunctionRewardSuffix.Length])).ToArray();
        if (lines.Length < 2) return GrpoPlots;                                        // one function: the reward plot already shows it
        var perFunction = new PlotSpec("grpo_reward_functions.png", "reward per function", "score per completion (mean, unweighted)", lines);
        return [GrpoPlots[0], perFunction, .. GrpoPlots[1..]];
    }

    /// <summary>
    /// The chart of <paramref name="spec"/>: its logged lines on the left axis and, when both exist, the right line on the
    /// right axis (said in the title); a right line without left ones is drawn alone, as is, on the left axis.
    /// </summary>
    private static Chart? ChartOf(PlotSpec spec, IReadOnlyList<Dictionary<string, JsonElement>> rows, string xKey)
    {
        var left = spec.Lines.Select(l => Plots.FromMetrics(rows, xKey, l.Key, l.Label)).OfType<Series>().Select(x => spec.Normalized ? MinMax(x) : x).ToList();
        if (spec.Normalized && left.Count < spec.Lines.Length) return null;                // a comparison needs every line
        if (spec.Right is not { } r || Plots.FromMetrics(rows, xKey, r.Key, r.Label) is not { } right)
            return left.Count == 0 ? null : new Chart(spec.Title, xKey, spec.YLabel, left, ShareY: spec.Share);
        if (left.Count == 0) return new Chart(spec.Title, xKey, r.YLabel, [right], ShareY: spec.RightShare);
        return new Chart($"{spec.Title}; {r.Label} on the right axis", xKey, spec.YLabel,
            [.. left, right with { Label = $"{r.Label}, right axis", RightAxis = true }], r.YLabel, spec.Share, spec.RightShare);
    }

    /// <summary>A series rescaled to [0, 1]: (y - min) / (max - min); a flat one stays at 0.5.</summary>
    private static Series MinMax(Series s)
    {
        double min = s.Y.Min(), max = s.Y.Max();
        return s with { Y = s.Y.Select(y => max > min ? (y - min) / (max - min) : 0.5).ToArray() };
    }

    /// <summary>(stage, directory) pairs: a demo run's sft/rm/ppo/grpo/dpo, or the directory itself (stage from <see cref="GuessStage"/>).</summary>
    private static List<(string Stage, string Dir)> Stages(string runDir)
    {
        var list = StageDirs.Select(stage => (stage, Path.Combine(runDir, stage)))
            .Where(s => File.Exists(Path.Combine(s.Item2, MetricsWriter.FileName))).ToList();
        var own = Path.Combine(runDir, MetricsWriter.FileName);
        if (list.Count == 0 && File.Exists(own)) list.Add((GuessStage(runDir, own), runDir));
        return list;
    }

    /// <summary>
    /// A single run's stage: the command recorded in its job.json; without one, rm for a score-head model in config.json
    /// (*ForSequenceClassification, or the built-in model's *WithMlpScoreHead), else from the first metrics row: grpo for
    /// TRL's group keys (frac_reward_zero_std), dpo for implicit rewards (rewards/chosen), ppo for rows by iteration, else sft.
    /// </summary>
    private static string GuessStage(string runDir, string metricsPath)
    {
        var command = ReadSettings(Path.Combine(runDir, RunJob.FileName)).FirstOrDefault(s => s.Key == "command").Value;
        if (command is not null && StageDirs.Contains(command)) return command;
        var configPath = Path.Combine(runDir, RunDirectory.ConfigFile);
        var config = File.Exists(configPath) ? File.ReadAllText(configPath) : "";
        if (config.Contains("ForSequenceClassification", StringComparison.Ordinal) || config.Contains("WithMlpScoreHead", StringComparison.Ordinal)) return "rm";
        var first = File.ReadLines(metricsPath).FirstOrDefault() ?? "";
        bool Has(string key) => first.Contains($"\"{key}\"", StringComparison.Ordinal);
        return Has("frac_reward_zero_std") ? "grpo" : Has("rewards/chosen") ? "dpo" : Has("iteration") ? "ppo" : "sft";
    }

    /// <summary>Rows of a metrics file; a line that is not a JSON object is an error naming the file and line.</summary>
    private static List<Dictionary<string, JsonElement>> ReadRows(string path)
    {
        var rows = new List<Dictionary<string, JsonElement>>();
        int n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (!string.IsNullOrWhiteSpace(line)) rows.Add(ParseObject(line, $"{path}:{n}"));
        }
        return rows;
    }

    /// <summary>A JSON object's members; anything else is an error naming <paramref name="where"/>.</summary>
    private static Dictionary<string, JsonElement> ParseObject(string json, string where)
    {
        try { return JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(json) ?? throw new JsonException("null"); }
        catch (JsonException) { throw new PpoSharpException($"{where}: not a JSON object"); }
    }

    /// <summary>
    /// The run's settings as a compact key/value table, three pairs a row: the inputs recorded in <c>job.json</c> (command,
    /// model, data, rewards; not the hashes) and every key of <c>training_config.json</c>.
    /// </summary>
    private static void AppendSettings(StringBuilder html, string dir)
    {
        var settings = ReadSettings(Path.Combine(dir, RunJob.FileName))
            .Where(s => s.Key != "config" && !s.Key.EndsWith("_sha256", StringComparison.Ordinal))
            .Concat(ReadSettings(Path.Combine(dir, RunDirectory.TrainingFile))).ToList();
        if (settings.Count == 0) return;
        html.Append("<h3>Settings</h3><table class=\"settings\">");
        foreach (var row in settings.Chunk(3))
            html.Append("<tr>").Append(string.Concat(row.Select(s => $"<td class=\"k\">{E(s.Key)}</td><td>{E(s.Value)}</td>"))).Append("</tr>");
        html.Append("</table>");
    }

    /// <summary>A JSON settings file's keys and values (strings as they are, anything else as JSON); none when the file is absent.</summary>
    private static IEnumerable<(string Key, string Value)> ReadSettings(string path) => !File.Exists(path) ? [] :
        ParseObject(File.ReadAllText(path), path).Select(p => (p.Key, p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText()));

    /// <summary>The last logged value of each held-out (<c>eval_*</c>) metric, with the step or iteration it was measured at.</summary>
    private static void AppendLastHeldOut(StringBuilder html, IReadOnlyList<Dictionary<string, JsonElement>> rows, string xKey)
    {
        var keys = rows.SelectMany(r => r.Keys).Where(k => k.StartsWith(Plots.HeldOutPrefix, StringComparison.Ordinal)).Distinct();
        var last = keys.Select(k => Plots.FromMetrics(rows, xKey, k)).OfType<Series>().ToList();
        if (last.Count == 0) return;
        html.Append($"<h3>Held-out metrics (last evaluation)</h3><table><tr><th>metric</th><th>value</th><th>{xKey}</th></tr>");
        foreach (var s in last)
            html.Append($"<tr><td>{E(s.Label)}</td><td class=\"n\">{s.Y[^1]:0.####}</td><td class=\"n\">{s.X[^1]}</td></tr>");
        html.Append("</table>");
    }

    /// <summary>
    /// A <c>summary.json</c>'s held-out comparison (greedy; a column per model, as the file names them) and samples,
    /// when the file exists.
    /// </summary>
    private static void AppendSummary(StringBuilder html, string path)
    {
        if (!File.Exists(path)) return;
        var summary = JsonSerializer.Deserialize<DemoSummary>(File.ReadAllText(path), Json.Options);
        if (summary is null) return;
        html.Append($"<h3>Held-out prompts</h3><p>Task <b>{E(summary.Task)}</b>; {summary.EvalPrompts} held-out prompts, greedy decoding; reward: {E(summary.Reward)}.</p>");
        string heads = string.Concat(summary.Columns.Select(c => $"<th>{E(c)}</th>"));
        html.Append($"<table><tr><th>metric</th>{heads}</tr>");
        foreach (var row in summary.Table)
            html.Append($"<tr><td>{E(row.Metric)}</td>{string.Concat(row.Values.Select(v => $"<td class=\"n\">{E(v)}</td>"))}</tr>");
        html.Append($"</table><h3>Samples</h3><table><tr><th>prompt</th><th>solution</th>{heads}</tr>");
        foreach (var s in summary.Samples)
            html.Append($"<tr><td>{E(s.Prompt)}</td><td>{E(s.Solution)}</td>{string.Concat(s.Answers.Select(a => $"<td class=\"{(a.Ok ? "ok" : "no")}\">{E(a.Text)}</td>"))}</tr>");
        html.Append("</table>");
    }

    private static string E(string? text) => WebUtility.HtmlEncode(text ?? "");
}

/// <summary>
/// What the demo (or a run with --eval) saves as <c>summary.json</c> for the report: one column per model (e.g. SFT,
/// PPO, GRPO, DPO; or the initial and the trained model), the table rows and side-by-side samples.
/// </summary>
public sealed record DemoSummary(string Task, int EvalPrompts, string Reward, List<string> Columns, List<TableRow> Table, List<DemoSample> Samples);

/// <summary>A metric and its value in each column.</summary>
public sealed record TableRow(string Metric, List<string> Values);

/// <summary>A held-out prompt, its solution, and each column's answer (Ok: an exact match).</summary>
public sealed record DemoSample(string Prompt, string Solution, List<SampleAnswer> Answers);

public sealed record SampleAnswer(string Text, bool Ok);
