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
        Assert.Contains("value loss: not in the metrics.", html);
        Assert.Equal(0x89, File.ReadAllBytes(Path.Combine(dir, "plots", "ppo_kl.png"))[0]);       // PNG signature
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
        var summary = new DemoSummary("sort", 2, "edit-distance", [new("exact match", "10.0 %", "80.0 %")],
            [new("sort: <b>", "<b>", "<script>alert(1)</script>", false, "b<", true)]);
        File.WriteAllText(Path.Combine(dir, Report.SummaryFile), System.Text.Json.JsonSerializer.Serialize(summary, Json.Options));
        var html = File.ReadAllText(Report.Write(dir));
        Assert.DoesNotContain("<script>", html);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html);
        Assert.Contains("80.0 %", html);
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
        Assert.Equal($"{dir}: no metrics.jsonl here or in sft/, rm/, ppo/", Assert.Throws<PpoSharpException>(() => Report.Write(dir)).Message);
        File.WriteAllText(Path.Combine(dir, MetricsWriter.FileName), "{\"step\":1}\nnot json\n");
        Assert.Equal($"{Path.Combine(dir, MetricsWriter.FileName)}:2: not a JSON object", Assert.Throws<PpoSharpException>(() => Report.Write(dir)).Message);
    }
}
