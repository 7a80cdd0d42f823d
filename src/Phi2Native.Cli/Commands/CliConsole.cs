using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>Spectre.Console over a command's writer: colours and live widgets on a terminal, plain wide text otherwise.</summary>
internal static class CliConsole
{
    /// <summary>True when <paramref name="writer"/> is the process's own standard output or error and that is a terminal.</summary>
    public static bool IsTerminal(TextWriter writer) =>
        (ReferenceEquals(writer, Console.Out) && !Console.IsOutputRedirected) || (ReferenceEquals(writer, Console.Error) && !Console.IsErrorRedirected);

    public static IAnsiConsole Create(TextWriter writer)
    {
        bool terminal = IsTerminal(writer);
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        // A file or a pipe has no width of its own: give tables room instead of wrapping every cell.
        if (!terminal) console.Profile.Width = 200;
        return console;
    }
}
