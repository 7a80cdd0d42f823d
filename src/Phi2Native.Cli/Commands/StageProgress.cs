using System.Diagnostics;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// Long stages (loading a 5 GB checkpoint, a CPU backward pass) shown on standard error: a live Spectre.Console
/// progress bar on a terminal, one line per finished stage when redirected (logs, tests).
/// </summary>
internal sealed class StageProgress(TextWriter error)
{
    private readonly bool _interactive = CliConsole.IsTerminal(error);
    private readonly IAnsiConsole _console = CliConsole.Create(error);

    /// <summary>True on a terminal, where live widgets render.</summary>
    public bool Interactive => _interactive;

    /// <summary>The console on standard error.</summary>
    public IAnsiConsole Console => _console;

    /// <summary>Runs <paramref name="work"/>, which reports its fraction done (0..1), and returns its result.</summary>
    public T Run<T>(string stage, Func<IProgress<double>, T> work)
    {
        var clock = Stopwatch.StartNew();
        T result = default!;
        if (_interactive)
            _console.Progress().AutoClear(true).Start(context =>
            {
                var task = context.AddTask(stage, maxValue: 1);
                result = work(new Progress<double>(fraction => task.Value = fraction));
            });
        else result = work(new Progress<double>());
        error.WriteLine($"{stage}: {clock.Elapsed.TotalSeconds:F1} s");
        return result;
    }
}
