using System.CommandLine;
using Phi2Native.Cli.Commands;

namespace Phi2Native.Cli;

/// <summary>
/// The `phi2` command: one subcommand per job, each parsing its options, calling the library (Phi2Native.Hosting) and
/// printing. Exit codes (Commands/ExitCodes.cs, and README.md's table): 0 done, 1 engine fault, 2 bad input or usage, 3
/// training stopped on a non-finite value, 130/143 stopped by SIGINT/SIGTERM after a checkpoint. Arguments are taken
/// literally: an argument starting with @ is text, not a response file.
/// </summary>
public static class Program
{
    /// <summary>Entry point.</summary>
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the command line with the given writers (tests call this in process).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        var parsed = Parse(args, output, error);
        if (parsed.Errors.Count > 0)
        {
            foreach (var parseError in parsed.Errors) error.WriteLine($"error: {parseError.Message}");
            error.WriteLine("Run `phi2 --help` for usage.");
            return ExitCodes.BadInput;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = output, Error = error });
    }

    /// <summary>Parses <paramref name="args"/> without running anything: what <see cref="Run"/> does first (tests check the README's examples with it).</summary>
    public static ParseResult Parse(string[] args, TextWriter output, TextWriter error)
    {
        var root = new RootCommand("Phi2Native: a from-scratch compute engine for Microsoft's Phi-2 language model.")
        {
            DemoCommand.Create(output, error),
            TraceCommand.Create(output, error),
            MergeCommand.Create(output, error),
            FinetuneCommand.Create(output, error),
            LayersCommand.Create(output, error),
            GenerateCommand.Create(output, error),
            TokenizeCommand.Create(output, error),
            BenchCommand.Create(output, error),
        };
        root.Options.Add(Notices.CreateQuietOption());
        NumberOptions.Install(root);
        // No response files: "--prompt @user" is a prompt that starts with @, not the contents of a file named "user".
        return root.Parse(EmptyValues.Expand(args, root), new ParserConfiguration { ResponseFileTokenReplacer = null });
    }
}
