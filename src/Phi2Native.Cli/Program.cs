using System.CommandLine;
using Phi2Native.Cli.Commands;

namespace Phi2Native.Cli;

/// <summary>The `phi2` command: one subcommand per job. Exit codes: 0 success, 2 bad input or usage, 1 internal error.</summary>
public static class Program
{
    /// <summary>Entry point.</summary>
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Runs the command line with the given writers (tests call this in process).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
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
        };
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var parseError in parsed.Errors) error.WriteLine($"error: {parseError.Message}");
            error.WriteLine("Run `phi2 --help` for usage.");
            return 2;
        }
        return parsed.Invoke(new InvocationConfiguration { Output = output, Error = error });
    }
}
