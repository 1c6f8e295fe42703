using System.Text.Json;

namespace PpoSharp.Reporting;

/// <summary>One line of a plot: a metric's values against the step or iteration.</summary>
public sealed record Series(string Label, double[] X, double[] Y);

/// <summary>Line plots of metrics as PNG files (ScottPlot; no display needed).</summary>
public static class Plots
{
    public static void Line(string path, string title, string xLabel, IReadOnlyList<Series> series, int width = 640, int height = 400)
    {
        var plot = new ScottPlot.Plot();
        foreach (var s in series)
        {
            var line = plot.Add.Scatter(s.X, s.Y);
            line.LegendText = s.Label;
            line.MarkerSize = s.X.Length > 60 ? 0 : 4;
        }
        plot.Title(title);
        plot.XLabel(xLabel);
        if (series.Count > 1) plot.ShowLegend();
        plot.SavePng(path, width, height);
    }

    /// <summary>
    /// The finite numeric values of <paramref name="key"/> against <paramref name="xKey"/> (row number when absent);
    /// rows missing the key, or holding a non-number, are left out.
    /// </summary>
    public static Series? FromMetrics(IReadOnlyList<Dictionary<string, JsonElement>> rows, string xKey, string key, string? label = null)
    {
        var x = new List<double>();
        var y = new List<double>();
        for (int i = 0; i < rows.Count; i++)
        {
            if (!rows[i].TryGetValue(key, out var v) || v.ValueKind != JsonValueKind.Number || !double.IsFinite(v.GetDouble())) continue;
            x.Add(rows[i].TryGetValue(xKey, out var xv) && xv.ValueKind == JsonValueKind.Number ? xv.GetDouble() : i + 1);
            y.Add(v.GetDouble());
        }
        return y.Count == 0 ? null : new Series(label ?? key, [.. x], [.. y]);
    }
}
