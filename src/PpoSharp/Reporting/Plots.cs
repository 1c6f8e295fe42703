using System.Text.Json;

namespace PpoSharp.Reporting;

/// <summary>
/// One line of a plot: a metric's values against the step or iteration. <paramref name="HeldOut"/> marks a sparse
/// held-out series (drawn with markers, not smoothed); <paramref name="RightAxis"/> draws it against the right y axis.
/// </summary>
public sealed record Series(string Label, double[] X, double[] Y, bool HeldOut = false, bool RightAxis = false);

/// <summary>
/// What a plot shows: its title, axis labels (the right one only when a series uses it) and lines. A share (a rate, an
/// accuracy) is drawn on a fixed [0, 1] axis (<paramref name="ShareY"/> left, <paramref name="ShareRightY"/> right), so
/// that a constant 1.0 is a flat line at the top rather than spikes around "1", and a share that stays 0 sits at the
/// bottom rather than in the middle of a -1 to 1 axis.
/// </summary>
public sealed record Chart(string Title, string XLabel, string YLabel, IReadOnlyList<Series> Series, string? RightYLabel = null,
    bool ShareY = false, bool ShareRightY = false);

/// <summary>Line plots of metrics as PNG files (ScottPlot; no display needed).</summary>
public static class Plots
{
    /// <summary>Held-out metrics are logged under this prefix (every <c>eval_every</c> steps), the others every step.</summary>
    public const string HeldOutPrefix = "eval_";

    /// <summary>An installed sans-serif family, as on the page: SkiaSharp's own default on Linux can be a serif one.</summary>
    private static readonly string SansFont = new[] { "DejaVu Sans", "Liberation Sans", "Arial", "Helvetica" }
        .FirstOrDefault(SkiaSharp.SKFontManager.Default.FontFamilies.Contains) ?? ScottPlot.Fonts.Sans;

    /// <summary>
    /// Draws <paramref name="chart"/>: a per-step series as its smoothed line (<see cref="Smooth"/>, weight in the legend)
    /// over the raw values drawn thin and faint in the same colour; a held-out series as a line with markers. The legend
    /// sits below the data area, so it never covers the last points.
    /// </summary>
    public static void Draw(string path, Chart chart, int width = 640, int height = 440)
    {
        var plot = new ScottPlot.Plot();
        plot.Font.Set(SansFont);
        plot.Axes.Title.Label.Bold = true;
        for (int i = 0; i < chart.Series.Count; i++)
        {
            var s = chart.Series[i];
            var color = plot.Add.Palette.GetColor(i);
            double weight = s.HeldOut ? 0 : SmoothingWeight(s.Y.Length);
            if (weight > 0) AddLine(plot, s, s.Y, color.WithAlpha(0.3), 1, 0, null);
            string label = weight > 0 ? $"{s.Label} (EMA {weight:0.##})" : s.Label;
            float marker = s.HeldOut ? 6 : weight > 0 || s.X.Length > 60 ? 0 : 4;
            AddLine(plot, s, Smooth(s.Y, weight), color, 2, marker, label);
        }
        plot.Title(chart.Title);
        plot.XLabel(chart.XLabel);
        plot.YLabel(chart.YLabel);
        if (chart.RightYLabel is not null) plot.Axes.Right.Label.Text = chart.RightYLabel;
        if (chart.ShareY) plot.Axes.SetLimitsY(-ShareMargin, 1 + ShareMargin, plot.Axes.Left);
        if (chart.ShareRightY) plot.Axes.SetLimitsY(-ShareMargin, 1 + ShareMargin, plot.Axes.Right);
        plot.ShowLegend(ScottPlot.Edge.Bottom);
        plot.SavePng(path, width, height);
    }

    /// <summary>Room above 1 and below 0 on a share's axis, so that a line at 0 or 1 is not drawn on the frame.</summary>
    private const double ShareMargin = 0.03;

    private static void AddLine(ScottPlot.Plot plot, Series s, double[] y, ScottPlot.Color color, float width, float marker, string? label)
    {
        var line = plot.Add.Scatter(s.X, y, color);
        line.LineWidth = width;
        line.MarkerSize = marker;
        if (label is not null) line.LegendText = label;
        if (s.RightAxis) line.Axes.YAxis = plot.Axes.Right;
    }

    /// <summary>
    /// TensorBoard's debiased exponential moving average: m_i = w m_(i-1) + (1 - w) y_i from m_0 = 0, shown as
    /// m_i / (1 - w^i), which removes the early pull towards 0. Weight 0 returns the values unchanged.
    /// </summary>
    public static double[] Smooth(IReadOnlyList<double> y, double weight)
    {
        var smoothed = new double[y.Count];
        double m = 0, debias = 1;
        for (int i = 0; i < y.Count; i++)
        {
            m = weight * m + (1 - weight) * y[i];
            debias *= weight;
            smoothed[i] = m / (1 - debias);
        }
        return smoothed;
    }

    /// <summary>
    /// The EMA weight for <paramref name="points"/> values: 1 - 20 / points (a window of about a twentieth of the run),
    /// at most 0.9, rounded to 0.01; 0 (no smoothing) for 20 points or fewer. 50 points give TensorBoard's 0.6.
    /// </summary>
    public static double SmoothingWeight(int points) => points <= 20 ? 0 : Math.Round(Math.Min(0.9, 1 - 20.0 / points), 2);

    /// <summary>
    /// The finite numeric values of <paramref name="key"/> against <paramref name="xKey"/> (row number when absent);
    /// rows missing the key, or holding a non-number, are left out. A key with <see cref="HeldOutPrefix"/> is held out.
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
        return y.Count == 0 ? null : new Series(label ?? key, [.. x], [.. y], key.StartsWith(HeldOutPrefix, StringComparison.Ordinal));
    }
}
