using Spectre.Console;

namespace PpoSharp.Reporting;

/// <summary>A Spectre console writing to a given writer: the terminal itself, or plain text (no ANSI codes) elsewhere.</summary>
public static class Consoles
{
    public static IAnsiConsole For(TextWriter log) => ReferenceEquals(log, Console.Out)
        ? AnsiConsole.Console
        : AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(log), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
}
