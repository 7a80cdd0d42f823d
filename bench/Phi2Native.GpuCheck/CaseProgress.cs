using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>Hears about each case (a check, a benchmark) of a run as it starts and ends.</summary>
/// <typeparam name="TOutcome">The case's outcome: <see cref="CheckOutcome"/> or <see cref="BenchOutcome"/>.</typeparam>
internal interface ICaseObserver<in TOutcome>
{
    /// <summary>Case <paramref name="index"/> (0-based, in the run's list) is about to start.</summary>
    void Starting(int index, string name);

    /// <summary>
    /// Case <paramref name="index"/> ended, or was never started (then without <see cref="Starting"/>);
    /// <paramref name="trace"/> is the full exception when it threw.
    /// </summary>
    void Finished(int index, string name, TOutcome outcome, string? trace);
}

/// <summary>
/// The progress log: "[ 3/278] name ... pass in 1.2 ms, ..." per case, the exception under a case that threw.
/// The name is written (and flushed) before the case runs, so a case that hangs the process is the log's last line.
/// </summary>
/// <param name="output">Where the lines go.</param>
/// <param name="total">How many cases the whole run has (the "/N").</param>
/// <param name="describe">The text after "..." for an outcome.</param>
internal sealed class ConsoleProgress<TOutcome>(TextWriter output, int total, Func<TOutcome, string> describe) : ICaseObserver<TOutcome>
{
    private readonly int _width = total.ToString(CultureInfo.InvariantCulture).Length;
    private int _open = -1;

    /// <summary>Added to each index before it is printed: where this part of the run starts in the whole.</summary>
    public int Offset { get; set; }

    /// <inheritdoc/>
    public void Starting(int index, string name)
    {
        Close();
        output.Write($"{Position(index)} {name} ... ");
        output.Flush();
        _open = index;
    }

    /// <inheritdoc/>
    public void Finished(int index, string name, TOutcome outcome, string? trace)
    {
        if (_open != index)
        {
            Close();
            output.Write($"{Position(index)} {name}: ");
        }
        output.WriteLine(describe(outcome));
        _open = -1;
        if (trace is not null) output.WriteLine(trace);
    }

    /// <summary>A line that is not about a case (a child's standard error, a note), on a line of its own.</summary>
    public void Note(string line)
    {
        Close();
        output.WriteLine(line);
    }

    private void Close()
    {
        if (_open < 0) return;
        output.WriteLine();
        _open = -1;
    }

    private string Position(int index) =>
        $"[{(index + Offset + 1).ToString(CultureInfo.InvariantCulture).PadLeft(_width)}/{total.ToString(CultureInfo.InvariantCulture)}]";
}
