using PpoSharp.Reporting;
using PpoSharp.Training;

namespace PpoSharp.Tests;

/// <summary>
/// report.html laid out by a real browser: tools/report-check/check-report.mjs renders it in headless Chromium at
/// 1280 px and checks that it uses the width, overflows nothing, cuts no text off and loads every plot.
/// </summary>
public class ReportLayoutTests
{
    private static readonly System.Globalization.CultureInfo Inv = System.Globalization.CultureInfo.InvariantCulture;
    private const string Chromium = "/usr/bin/chromium";
    private const string Script = "tools/report-check/check-report.mjs";

    /// <summary>The check script in the repository holding the test build, or null.</summary>
    private static string? ScriptPath()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, Script))) return Path.Combine(dir.FullName, Script);
        return null;
    }

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Any(d => File.Exists(Path.Combine(d, program)));

    /// <summary>Skipped, visibly, without Chromium, Node or the script (e.g. Debian: <c>apt-get install chromium</c>).</summary>
    public sealed class ChromiumFact : FactAttribute
    {
        public ChromiumFact()
        {
            if (!File.Exists(Chromium)) Skip = $"needs {Chromium} (Debian: apt-get install chromium) to lay report.html out";
            else if (!OnPath("node")) Skip = "needs node on PATH to run " + Script;
            else if (ScriptPath() is null) Skip = $"{Script} not found above {AppContext.BaseDirectory}";
        }
    }

    [ChromiumFact]
    public void Report_At1280px_UsesTheWidth_NoOverflowOrCutText_EveryPlotLoaded()
    {
        var dir = TestSupport.TempDir();
        Metrics(dir, "sft", i => string.Create(Inv, $$"""{"step":{{i}},"loss":{{2.0 / i}},"eval_loss":{{2.1 / i}}}"""));
        Metrics(dir, "dpo", i => string.Create(Inv, $$"""{"step":{{i}},"loss":{{0.7 - 0.01 * i}},"rewards/accuracies":{{0.5 + 0.02 * i}},"rewards/margins":{{0.01 * i}}}"""));
        Metrics(dir, "ppo", i => string.Create(Inv, $$"""{"iteration":{{i}},"reward_mean":{{i / 20.0}},"kl":{{0.01 * i}},"entropy":1.0,"clipfrac":0.1,"value_loss":{{1.0 / i}},"eos_rate":1.0}"""));
        Report.Write(dir);
        var (code, output, errors) = Node(ScriptPath()!, Path.Combine(dir, "report.html"), "--width", "1280");
        Assert.True(code == 0, errors + output);
        Assert.Contains("\"viewport_width\": 1280", output);
        Assert.Contains("\"plot_columns\": 2", output);
    }

    /// <summary>The check fails a page that cannot use the width: the same script, a page of one 600 px column.</summary>
    [ChromiumFact]
    public void Check_FailsANarrowPage()
    {
        var dir = TestSupport.TempDir();
        Metrics(dir, "ppo", i => string.Create(Inv, $$"""{"iteration":{{i}},"reward_mean":{{i / 20.0}},"kl":{{0.01 * i}}}"""));
        var html = File.ReadAllText(Report.Write(dir)).Replace("<body>", "<body style=\"max-width:600px\">", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(dir, "report.html"), html);
        var (code, _, errors) = Node(ScriptPath()!, Path.Combine(dir, "report.html"));
        Assert.Equal(1, code);
        Assert.Contains("of 1280 (< 90 %)", errors);
    }

    private static void Metrics(string dir, string run, Func<int, string> row)
    {
        Directory.CreateDirectory(Path.Combine(dir, run));
        File.WriteAllLines(Path.Combine(dir, run, MetricsWriter.FileName), Enumerable.Range(1, 20).Select(row));
    }

    private static (int Code, string Out, string Err) Node(params string[] args)
    {
        var start = new System.Diagnostics.ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }
}
