using System.CommandLine;
using Phi2Native.Embedded;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// The notices a command writes on standard error before it works, each once and on one short line: which device
/// computes ("device: cpu (16 threads), f32") and, without --model, that the model is the embedded stand-in. --quiet
/// (-q), an option of every command, hides them; warnings, errors, progress and results still appear.
/// </summary>
internal static class Notices
{
    private const string QuietName = "--quiet";

    /// <summary>The --quiet option, for the root command (every subcommand takes it).</summary>
    public static Option<bool> CreateQuietOption() => new(QuietName, "-q")
    {
        Description = "Hide the notices on standard error (the device line, the embedded model's line); warnings, errors and results still appear.",
        Recursive = true,
    };

    /// <summary>Where the running command writes its notices: <paramref name="error"/>, or nowhere with --quiet.</summary>
    public static TextWriter Writer(ParseResult result, TextWriter error) => result.GetValue<bool>(QuietName) ? TextWriter.Null : error;

    /// <summary>Says, on one line of <paramref name="notices"/>, that a command without --model uses the embedded stand-in.</summary>
    public static void Model(string? model, TextWriter notices)
    {
        if (model is null) notices.WriteLine($"model: {EmbeddedDefault.Summary}; --model PATH for a real one");
    }
}
