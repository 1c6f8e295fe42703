using Spectre.Console;

namespace PpoSharp.Training;

/// <summary>
/// Progress of long work: a Spectre.Console bar with live figures in a terminal; plain lines (about every 5% and at
/// the end) when output is redirected, where Spectre's bar would print nothing.
/// </summary>
public static class ProgressBar
{
    /// <summary>Runs <paramref name="body"/>, which reports (steps done, status text) after each step.</summary>
    public static void Run(string title, int total, TextWriter log, Action<Action<int, string>> body)
    {
        if (ReferenceEquals(log, Console.Out) && AnsiConsole.Profile.Capabilities.Interactive)
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape(title), maxValue: total);
                    body((done, status) =>
                    {
                        task.Value = done;
                        task.Description = Markup.Escape($"{title} {status}");
                    });
                });
            return;
        }
        int every = Math.Max(1, total / 20);
        body((done, status) =>
        {
            if (done % every == 0 || done == total) log.WriteLine($"{title} {done}/{total} {status}");
        });
    }
}
