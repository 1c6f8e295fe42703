using System.Text.RegularExpressions;
using PpoSharp.Reporting;
using PpoSharp.Training;

namespace PpoSharp.Tests;

public class ReportTests
{
    [Fact]
    public void Report_MetricsWithMissingAndExtraKeys_StillRenders_AndSaysWhatIsMissing()
    {
        var dir = TestSupport.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "ppo"));
        File.WriteAllLines(Path.Combine(dir, "ppo", MetricsWriter.FileName),
        [
            """{"iteration":1,"reward_mean":0.2,"kl":0.0,"something_new":"x"}""",
            """{"iteration":2,"reward_mean":0.5,"kl":"NaN"}""",
            """{"iteration":3,"kl":0.3,"entropy":1.1}""",
        ]);
        var html = File.ReadAllText(Report.Write(dir));
        Assert.True(File.Exists(Path.Combine(dir, "plots", "ppo_reward.png")));
        Assert.True(File.Exists(Path.Combine(dir, "plots", "ppo_kl.png")));
        Assert.True(File.Exists(Path.Combine(dir, "plots", "ppo_entropy.png")));
        Assert.False(File.Exists(Path.Combine(dir, "plots", "ppo_value_loss.png")));
        Assert.DoesNotContain("not in the metrics", html);                                      // no placeholder for a plot that does not apply
        Assert.All(Directory.GetFiles(Path.Combine(dir, Report.PlotDir)), png =>
        {
            using var bitmap = SkiaSharp.SKBitmap.Decode(png);                                  // null unless a readable image
            Assert.True(bitmap is { Width: > 0, Height: > 0 }, png);
            Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, File.ReadAllBytes(png)[..8]);   // PNG signature
        });
    }

    [Fact]
    public void Series_SkipsRowsWithoutTheKeyOrWithNonNumbers()
    {
        var rows = MetricsWriter.Read(TestSupport.WriteLines(TestSupport.TempDir(), "m.jsonl",
            """{"step":1,"loss":2.0}""", """{"step":2}""", """{"step":3,"loss":"oops"}""", """{"step":4,"loss":1.0}"""));
        var s = Plots.FromMetrics(rows, "step", "loss")!;
        Assert.Equal(new double[] { 1, 4 }, s.X);
        Assert.Equal(new double[] { 2, 1 }, s.Y);
        Assert.Null(Plots.FromMetrics(rows, "step", "accuracy"));
    }

    [Fact]
    public void Report_OfDemoRun_ReferencesOnlyFilesInTheRunDirectory_AndEscapesModelText()
    {
        var dir = TestSupport.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "sft"));
        File.WriteAllLines(Path.Combine(dir, "sft", MetricsWriter.FileName), ["""{"step":1,"loss":2.0}""", """{"step":2,"loss":1.5,"eval_loss":1.6}"""]);
        var summary = new DemoSummary("sort", 2, "edit-distance", ["SFT", "PPO", "GRPO"], [new("exact match", ["10.0 %", "80.0 %", "77.5 %"])],
            [new("sort: <b>", "<b>", [new("<script>alert(1)</script>", false), new("b<", true), new("b<", true)])]);
        File.WriteAllText(Path.Combine(dir, Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));
        var html = File.ReadAllText(Report.Write(dir));
        Assert.DoesNotContain("<script>", html);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html);
        Assert.Contains("80.0 %", html);
        Assert.Contains("<tr><th>metric</th><th>SFT</th><th>PPO</th><th>GRPO</th></tr>", html);                 // a column per method
        Assert.Contains("<td class=\"n\">77.5 %</td></tr>", html);
        var links = Regex.Matches(html, "(?:src|href)=\"([^\"]+)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.NotEmpty(links);
        Assert.All(links, link =>
        {
            Assert.DoesNotContain("://", link);
            Assert.False(Path.IsPathRooted(link), link);
            Assert.True(File.Exists(Path.Combine(dir, link)), link);
        });
    }

    [Fact]
    public void Report_DirectoryWithoutMetrics_IsAClearError()
    {
        var dir = TestSupport.TempDir();
        Assert.Equal($"{dir}: no metrics.jsonl here or in sft/, rm/, ppo/, grpo/, dpo/, ppo-lora/, grpo-lora/", Assert.Throws<PpoSharpException>(() => Report.Write(dir)).Message);
        File.WriteAllText(Path.Combine(dir, MetricsWriter.FileName), "{\"step\":1}\nnot json\n");
        Assert.Equal($"{Path.Combine(dir, MetricsWriter.FileName)}:2: not a JSON object", Assert.Throws<PpoSharpException>(() => Report.Write(dir)).Message);
    }

    [Fact]
    public void Smooth_IsTheDebiasedExponentialMovingAverage()
    {
        // w = 0.5: m = 0.5, 1.25, 2.125; debiased by 1 - 0.5^i = 0.5, 0.75, 0.875 -> 1, 5/3, 17/7
        var smoothed = Plots.Smooth([1, 2, 3], 0.5);
        Assert.Equal([1, 5.0 / 3, 17.0 / 7], smoothed, (a, b) => Math.Abs(a - b) < 1e-12);
        Assert.Equal([4.0, -1, 2], Plots.Smooth([4, -1, 2], 0));
        Assert.Equal(0, Plots.SmoothingWeight(20));
        Assert.Equal(0.6, Plots.SmoothingWeight(50));
        Assert.Equal(0.9, Plots.SmoothingWeight(5000));
    }

    [Fact]
    public void RewardPlot_PutsGoldOnARightAxis_OnlyBesideTheProxyReward()
    {
        var both = Rows("""{"iteration":1,"reward_mean":-1.3,"gold_reward_mean":0.1}""", """{"iteration":2,"reward_mean":7.8,"gold_reward_mean":0.2}""");
        var chart = RewardChart(both);
        Assert.Contains("right axis", chart.Title);
        Assert.Equal([false, true], chart.Series.Select(s => s.RightAxis));
        Assert.Contains("gold", chart.RightYLabel);

        var goldOnly = RewardChart(Rows("""{"iteration":1,"gold_reward_mean":0.1}"""));
        Assert.False(Assert.Single(goldOnly.Series).RightAxis);
        Assert.Null(goldOnly.RightYLabel);
        Assert.Contains("gold", goldOnly.YLabel);
        Assert.DoesNotContain("right axis", goldOnly.Title);

        static Chart RewardChart(List<Dictionary<string, System.Text.Json.JsonElement>> rows) =>
            Report.Charts("ppo", rows).Single(c => c.File == "ppo_reward.png").Chart!;
    }

    [Fact]
    public void HeldOutSeries_AreMarkedSoTheyAreNotSmoothed_AndEveryPlotHasAYLabel()
    {
        var rows = Rows("""{"step":1,"loss":2.0}""", """{"step":2,"loss":1.5,"eval_loss":1.6}""");
        var chart = Report.Charts("sft", rows).Single().Chart!;
        Assert.Equal([false, true], chart.Series.Select(s => s.HeldOut));
        var ppo = Rows("""{"iteration":1,"reward_mean":1,"kl":1,"entropy":1,"clipfrac":0.1,"value_loss":1,"explained_variance":0.5,"eos_rate":1,"proxy_score_mean":2,"gold_reward_mean":0.5}""");
        Assert.All(Report.Charts("ppo", ppo).Concat(Report.Charts("rm", Rows("""{"step":1,"loss":1,"accuracy":0.5}""")))
                .Concat(Report.Charts("grpo", Rows(GrpoRows))).Concat(Report.Charts("dpo", Rows(DpoRows))),
            c => Assert.False(string.IsNullOrWhiteSpace(c.Chart!.YLabel), c.File));
    }

    [Fact]
    public void Report_OfSinglePpoRun_ShowsItsSettingsAndHeldOutResults()
    {
        var dir = TestSupport.TempDir();
        File.WriteAllLines(Path.Combine(dir, MetricsWriter.FileName), ["""{"iteration":1,"reward_mean":0.5,"kl":0}""", """{"iteration":2,"reward_mean":0.7,"kl":0.2}"""]);
        File.WriteAllText(Path.Combine(dir, RunDirectory.TrainingFile), """{"kl_coef":0.0421,"critic":"separate"}""");
        File.WriteAllText(Path.Combine(dir, RunJob.FileName), """{"command":"ppo","config":{"kl_coef":0.0421},"data":"/d/p.jsonl","data_sha256":"feed"}""");
        var summary = new DemoSummary("ppo --eval", 7, "edit-distance", ["initial model", "after ppo"], [new("exact match", ["12.5 %", "62.5 %"])], []);
        File.WriteAllText(Path.Combine(dir, Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));
        var html = File.ReadAllText(Report.Write(dir));
        Assert.Contains("<td class=\"k\">kl_coef</td><td>0.0421</td>", html);
        Assert.Contains("<td class=\"k\">data</td><td>/d/p.jsonl</td>", html);
        Assert.DoesNotContain("feed", html);
        Assert.Single(Regex.Matches(html, "62.5 %"));                                          // the run's own summary, once
    }

    [Fact]
    public void Report_OfDemoRun_ShowsEachStagesSettingsAndHeldOutResults()
    {
        var dir = TestSupport.TempDir();
        Directory.CreateDirectory(Path.Combine(dir, "sft"));
        File.WriteAllLines(Path.Combine(dir, "sft", MetricsWriter.FileName),
            ["""{"step":10,"loss":2.0,"eval_loss":1.75}""", """{"step":20,"loss":1.5}""", """{"step":30,"loss":1.2,"eval_loss":1.3125}"""]);
        File.WriteAllText(Path.Combine(dir, "sft", RunDirectory.TrainingFile), """{"n_layer":3}""");
        Directory.CreateDirectory(Path.Combine(dir, "ppo"));
        File.WriteAllLines(Path.Combine(dir, "ppo", MetricsWriter.FileName), ["""{"iteration":1,"kl":0}"""]);
        var summary = new DemoSummary("ppo --eval", 7, "exact-match", ["initial model", "after ppo"], [new("exact match", ["0.0 %", "42.9 %"])], []);
        File.WriteAllText(Path.Combine(dir, "ppo", Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));
        var html = File.ReadAllText(Report.Write(dir));
        Assert.Contains("<td class=\"k\">n_layer</td><td>3</td>", html);
        Assert.Contains("<td>eval_loss</td><td class=\"n\">1.3125</td><td class=\"n\">30</td>", html);
        Assert.Contains("42.9 %", html[html.IndexOf("<h2>PPO", StringComparison.Ordinal)..]);
    }

    [Theory]
    [InlineData(RunDirectory.ConfigFile, """{"architectures":["GPT2WithMlpScoreHead"]}""")]
    [InlineData(RunDirectory.ConfigFile, """{"architectures":["Qwen2ForSequenceClassification"]}""")]
    [InlineData(RunJob.FileName, """{"command":"rm","config":{}}""")]
    public void Report_OfSingleRewardModelRun_DrawsTheRewardModelPlots(string file, string json)
    {
        var dir = TestSupport.TempDir();
        File.WriteAllLines(Path.Combine(dir, MetricsWriter.FileName), ["""{"step":1,"loss":0.7,"accuracy":0.5}"""]);
        File.WriteAllText(Path.Combine(dir, file), json);
        Assert.Contains("<h2>RM (1 steps)</h2>", File.ReadAllText(Report.Write(dir)));
        Assert.True(File.Exists(Path.Combine(dir, Report.PlotDir, "rm_accuracy.png")));
    }

    private static readonly string[] GrpoRows =
    [
        """{"iteration":1,"reward":0.25,"reward_mean":0.25,"reward_std":0.3,"rewards/exact-match/mean":0.25,"rewards/exact-match/std":0.4,"rewards/repetition/mean":-0.1,"rewards/repetition/std":0.1,"frac_reward_zero_std":0.5,"completions/mean_length":9,"completions/clipped_ratio":0.125,"kl":0.01,"entropy":1.2,"loss":0.02,"clip_ratio/low_mean":0.01,"clip_ratio/high_mean":0.02,"clip_ratio/region_mean":0.03,"proxy_score_mean":1.5,"gold_reward_mean":0.3}""",
        """{"iteration":2,"reward":0.5,"reward_mean":0.5,"reward_std":0.2,"rewards/exact-match/mean":0.5,"rewards/exact-match/std":0.5,"rewards/repetition/mean":-0.05,"rewards/repetition/std":0.1,"frac_reward_zero_std":0.25,"completions/mean_length":8,"completions/clipped_ratio":0,"kl":0.02,"entropy":1.1,"loss":0.01,"clip_ratio/low_mean":0,"clip_ratio/high_mean":0.01,"clip_ratio/region_mean":0.01,"gold_reward_mean":0.4,"proxy_score_mean":2.5}""",
    ];

    private static readonly string[] DpoRows =
    [
        """{"step":1,"loss":0.69,"rewards/chosen":0.01,"rewards/rejected":-0.01,"rewards/accuracies":0.5,"rewards/margins":0.02,"logps/chosen":-20,"logps/rejected":-22,"lr":1e-6,"grad_norm":3}""",
        """{"step":2,"loss":0.6,"rewards/chosen":0.1,"rewards/rejected":-0.2,"rewards/accuracies":0.75,"rewards/margins":0.3,"logps/chosen":-19,"logps/rejected":-24,"lr":1e-6,"grad_norm":2,"eval_loss":0.62,"eval_rewards/chosen":0.08,"eval_rewards/rejected":-0.15,"eval_rewards/accuracies":0.7,"eval_rewards/margins":0.23,"eval_logps/chosen":-19.5,"eval_logps/rejected":-23}""",
    ];

    /// <summary>Files and titles a GRPO run's report must hold; none of PPO's critic plots.</summary>
    private static readonly string[] GrpoPlotFiles =
        ["grpo_reward.png", "grpo_proxy_vs_gold.png", "grpo_reward_functions.png", "grpo_reward_std.png", "grpo_kl.png", "grpo_entropy.png", "grpo_clip_ratio.png", "grpo_completion_length.png"];

    private static readonly string[] DpoPlotFiles = ["dpo_loss.png", "dpo_accuracy.png", "dpo_margins.png", "dpo_rewards.png", "dpo_logps.png"];

    [Fact]
    public void Report_OfSingleGrpoRun_DrawsGrpoPlots_NotPpos()
    {
        var dir = RunDir(GrpoRows, """{"command":"grpo","config":{"num_generations":8}}""");
        var html = File.ReadAllText(Report.Write(dir));
        Assert.Contains("<h2>GRPO (2 iterations)</h2>", html);
        Assert.DoesNotContain("<h2>PPO", html);
        Assert.DoesNotContain("<h2>SFT", html);
        Assert.DoesNotContain("value loss", html);
        Assert.Equal(GrpoPlotFiles.Order(), Directory.GetFiles(Path.Combine(dir, Report.PlotDir)).Select(Path.GetFileName).Order());
        foreach (var title in new[] { "GRPO reward; gold reward on the right axis", "reward per function", "reward spread within groups; groups with zero std on the right axis",
                     "KL to the reference", "policy entropy", "clipped ratios", "completion length; clipped on the right axis" })
            Assert.Contains($"alt=\"{title}\"", html);
    }

    [Fact]
    public void GrpoRewardFunctionPlot_HasOneLinePerFunction()
    {
        var chart = Report.Charts("grpo", Rows(GrpoRows)).Single(c => c.File == "grpo_reward_functions.png").Chart!;
        Assert.Equal(["exact-match", "repetition"], chart.Series.Select(s => s.Label));
        // One function: its line would repeat the reward plot, so there is no per-function plot.
        Assert.DoesNotContain(Report.Charts("grpo", Rows("""{"iteration":1,"reward":1,"rewards/exact-match/mean":1}""")), c => c.File == "grpo_reward_functions.png");
    }

    [Fact]
    public void Charts_SharesOnFixedUnitAxes_OtherMetricsFree_LabelsShortEnoughToShow()
    {
        var ppo = Rows("""{"iteration":1,"eos_rate":1.0,"kl":0.1,"clipfrac":0.1}""", """{"iteration":2,"eos_rate":1.0,"kl":0.2,"clipfrac":0.0}""");
        Chart Of(string stage, List<Dictionary<string, System.Text.Json.JsonElement>> rows, string file) => Report.Charts(stage, rows).Single(c => c.File == file).Chart!;
        Assert.True(Of("ppo", ppo, "ppo_eos_rate.png").ShareY);                            // 1.0 throughout: a line at the top, not spikes
        Assert.True(Of("ppo", ppo, "ppo_clipfrac.png").ShareY);
        Assert.False(Of("ppo", ppo, "ppo_kl.png").ShareY);
        var grpo = Rows(GrpoRows);
        Assert.True(Of("grpo", grpo, "grpo_clip_ratio.png").ShareY);
        var length = Of("grpo", grpo, "grpo_completion_length.png");
        Assert.True(length.ShareRightY && !length.ShareY);                                  // clipped share right, tokens left
        Assert.True(Of("dpo", Rows(DpoRows), "dpo_accuracy.png").ShareY);
        Assert.True(Of("rm", Rows("""{"step":1,"loss":1,"accuracy":0.5}"""), "rm_accuracy.png").ShareY);
        // A 440 px tall plot cut the old 50-character DPO label ("...nats per respons"); every label now fits in 44.
        var all = Report.Charts("ppo", ppo).Concat(Report.Charts("grpo", grpo)).Concat(Report.Charts("dpo", Rows(DpoRows))).Select(c => c.Chart).OfType<Chart>();
        Assert.All(all, c => Assert.True(c.YLabel.Length <= 44 && (c.RightYLabel?.Length ?? 0) <= 44, $"{c.Title}: '{c.YLabel}' / '{c.RightYLabel}'"));
    }

    [Fact]
    public void Report_OfSingleDpoRun_DrawsDpoPlots_NotSfts()
    {
        var dir = RunDir(DpoRows, """{"command":"dpo","config":{"beta":0.1}}""");
        var html = File.ReadAllText(Report.Write(dir));
        Assert.Contains("<h2>DPO (2 steps)</h2>", html);
        Assert.DoesNotContain("<h2>SFT", html);
        Assert.DoesNotContain("SFT loss", html);
        Assert.Equal(DpoPlotFiles.Order(), Directory.GetFiles(Path.Combine(dir, Report.PlotDir)).Select(Path.GetFileName).Order());
        foreach (var title in new[] { "DPO loss", "implicit-reward accuracy", "implicit-reward margin", "implicit rewards, chosen vs rejected", "policy log-probs, chosen vs rejected" })
            Assert.Contains($"alt=\"{title}\"", html);
        Assert.Contains("<td>eval_rewards/accuracies</td><td class=\"n\">0.7</td><td class=\"n\">2</td>", html);
        var accuracy = Report.Charts("dpo", Rows(DpoRows)).Single(c => c.File == "dpo_accuracy.png").Chart!;
        Assert.Equal([false, true], accuracy.Series.Select(s => s.HeldOut));
    }

    [Theory]
    [InlineData("grpo", "GRPO (2 iterations)")]
    [InlineData("dpo", "DPO (2 steps)")]
    public void Report_OfRunWithoutJobJson_TellsGrpoAndDpoFromTheirMetrics(string stage, string heading)
    {
        var dir = RunDir(stage == "grpo" ? GrpoRows : DpoRows, null);
        Assert.Contains($"<h2>{heading}</h2>", File.ReadAllText(Report.Write(dir)));
    }

    [Fact]
    public void Report_OfDemoRun_PicksUpGrpoAndDpoStages_InOrder()
    {
        var dir = TestSupport.TempDir();
        foreach (var (stage, rows) in new[] { ("dpo", DpoRows), ("grpo", GrpoRows), ("sft", new[] { """{"step":1,"loss":2.0}""" }) })
        {
            Directory.CreateDirectory(Path.Combine(dir, stage));
            File.WriteAllLines(Path.Combine(dir, stage, MetricsWriter.FileName), rows);
        }
        var html = File.ReadAllText(Report.Write(dir));
        var headings = Regex.Matches(html, "<h2>([A-Z]+) ").Select(m => m.Groups[1].Value);
        Assert.Equal(["SFT", "GRPO", "DPO"], headings);
        Assert.All(GrpoPlotFiles.Concat(DpoPlotFiles), f => Assert.True(File.Exists(Path.Combine(dir, Report.PlotDir, f)), f));
    }

    /// <summary>A single run directory with <paramref name="metrics"/> and, unless null, <paramref name="job"/> as job.json.</summary>
    private static string RunDir(string[] metrics, string? job)
    {
        var dir = TestSupport.TempDir();
        File.WriteAllLines(Path.Combine(dir, MetricsWriter.FileName), metrics);
        if (job is not null) File.WriteAllText(Path.Combine(dir, RunJob.FileName), job);
        return dir;
    }

    private static List<Dictionary<string, System.Text.Json.JsonElement>> Rows(params string[] lines) =>
        MetricsWriter.Read(TestSupport.WriteLines(TestSupport.TempDir(), "m.jsonl", lines));
}
