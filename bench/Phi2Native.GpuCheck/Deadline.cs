using System.Diagnostics;
using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>Elapsed time since a run began; tests substitute a clock they move by hand.</summary>
internal interface IRunClock
{
    /// <summary>Time since the clock started.</summary>
    TimeSpan Elapsed { get; }
}

/// <summary>The real clock: a stopwatch started when it is made.</summary>
internal sealed class StopwatchClock : IRunClock
{
    private readonly Stopwatch _watch = Stopwatch.StartNew();

    /// <inheritdoc/>
    public TimeSpan Elapsed => _watch.Elapsed;
}

/// <summary>
/// When a run of cases (checks, benchmarks, kernel files) must stop starting new ones, and the words that say why
/// in each NOT RUN row. Work already started is not interrupted: children are killed by their supervisor instead.
/// </summary>
/// <param name="Clock">The clock <paramref name="At"/> is measured on.</param>
/// <param name="At">The moment on <paramref name="Clock"/> after which nothing new starts.</param>
/// <param name="Why">Why a case did not run, e.g. "the stage's 90 s were spent".</param>
internal sealed record Deadline(IRunClock Clock, TimeSpan At, string Why)
{
    /// <summary>Whether the deadline has come.</summary>
    public bool IsPast => Clock.Elapsed >= At;

    /// <summary>Time left, never negative.</summary>
    public TimeSpan Remaining => At > Clock.Elapsed ? At - Clock.Elapsed : TimeSpan.Zero;

    /// <summary>A deadline <paramref name="limit"/> from now on a fresh clock, "the time limit (S s) was reached".</summary>
    public static Deadline After(TimeSpan limit) =>
        new(new StopwatchClock(), limit, $"the time limit ({Seconds(limit)} s) was reached");

    /// <summary>Whole seconds, or one decimal below ten ("90", "2.5").</summary>
    public static string Seconds(TimeSpan time) =>
        time.TotalSeconds.ToString(time.TotalSeconds < 10 ? "0.#" : "0", CultureInfo.InvariantCulture);
}
