using System.Diagnostics;
using Phi2Native.Cuda;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>How one check ended.</summary>
internal enum CheckStatus
{
    /// <summary>Every element within tolerance, and every allocation freed.</summary>
    Passed,
    /// <summary>A wrong answer, or an allocation left behind.</summary>
    Failed,
    /// <summary>The check threw (the device failed, or the check has a bug), or its process crashed or hung in it.</summary>
    Threw,
    /// <summary>Never started: the time ran out first, or an earlier check's fault killed the context.</summary>
    NotRun,
}

/// <summary>One check's outcome, as the runner reports it.</summary>
/// <param name="Check">The check.</param>
/// <param name="Status">How it ended.</param>
/// <param name="Result">The comparison, when the body returned one.</param>
/// <param name="Time">Wall time of the body and a final synchronize (uploads, launches, downloads and the CPU reference).</param>
/// <param name="Detail">The worst element, the leak, the exception's message, or why it did not run.</param>
internal sealed record CheckOutcome(DeviceCheck Check, CheckStatus Status, CheckResult? Result, TimeSpan Time, string Detail)
{
    /// <summary>The sticky CUDA error (<see cref="StickyFault"/>) this check threw, which ended its process's context; else null.</summary>
    public string? Fault { get; init; }

    /// <summary>Not run because an earlier check's sticky fault killed the context (a fresh process may still run it).</summary>
    public bool ContextLost { get; init; }
}

/// <summary>
/// Runs device checks and never lets one of them stop the run: an exception becomes that check's failure with its
/// message, so a GPU session always ends with the whole table, however many checks break. The one exception that
/// stops the run is a sticky fault (<see cref="StickyFault"/>): the context is dead, so the checks after it are not
/// run ("context lost after X"), and the GPU runner's supervisor runs them in a fresh child process.
/// </summary>
internal static class CheckRunner
{
    /// <summary>
    /// Runs <paramref name="checks"/> in order. Each gets a device from <paramref name="acquire"/> and hands it back to
    /// <paramref name="release"/> (a GPU is shared, as a context is costly; the emulator gives each check a fresh
    /// device, as the NUnit fixture does). Checks not started before <paramref name="deadline"/> are
    /// <see cref="CheckStatus.NotRun"/>, and so are those after a sticky fault. <paramref name="observer"/> hears of
    /// each check as it starts and ends.
    /// </summary>
    public static IReadOnlyList<CheckOutcome> RunAll(IReadOnlyList<DeviceCheck> checks, Func<IDeviceApi> acquire, Action<IDeviceApi> release,
        Deadline deadline, ICaseObserver<CheckOutcome> observer)
    {
        var outcomes = new List<CheckOutcome>(checks.Count);
        CheckOutcome? fault = null;
        for (int i = 0; i < checks.Count; i++)
        {
            var check = checks[i];
            CheckOutcome outcome;
            Exception? exception = null;
            if (fault is not null)
            {
                outcome = new CheckOutcome(check, CheckStatus.NotRun, null, TimeSpan.Zero,
                    $"not run: context lost after '{fault.Check.Name}' ({fault.Fault})") { ContextLost = true };
            }
            else if (deadline.IsPast)
            {
                outcome = new CheckOutcome(check, CheckStatus.NotRun, null, TimeSpan.Zero, $"not run: {deadline.Why}");
            }
            else
            {
                observer.Starting(i, check.Name);
                outcome = RunOne(check, acquire, release, out exception);
                if (outcome.Fault is not null) fault = outcome;
            }
            outcomes.Add(outcome);
            observer.Finished(i, check.Name, outcome, exception?.ToString());
        }
        return outcomes;
    }

    /// <summary>Runs one check; never throws. <paramref name="exception"/> is what it threw, if it did.</summary>
    public static CheckOutcome RunOne(DeviceCheck check, Func<IDeviceApi> acquire, Action<IDeviceApi> release, out Exception? exception)
    {
        exception = null;
        IDeviceApi? device = null;
        var watch = new Stopwatch();
        CheckOutcome outcome;
        try
        {
            device = acquire();
            int liveBefore = device.Memory.LiveAllocations;
            watch.Start();
            var result = check.Run(device);
            // The body has downloaded its results, so this returns at once unless it left work queued; either way the
            // time then covers all of the check's device work, and a fault of its kernels surfaces here, in it.
            device.Synchronize(DeviceStream.Default);
            watch.Stop();
            int leaked = device.Memory.LiveAllocations - liveBefore;
            outcome = leaked > 0
                ? new CheckOutcome(check, CheckStatus.Failed, result, watch.Elapsed, $"left {leaked} allocation(s) unfreed; {result.Detail}")
                : new CheckOutcome(check, result.Passed ? CheckStatus.Passed : CheckStatus.Failed, result, watch.Elapsed, result.Detail);
        }
        catch (Exception e)
        {
            watch.Stop();
            exception = e;
            outcome = Threw(check, watch.Elapsed, e);
        }
        if (device is null) return outcome;
        try
        {
            release(device);
        }
        catch (Exception e)
        {
            // Closing the device is where the emulator finds some corruption, so it fails the check; an earlier
            // exception stays the one the table shows.
            if (exception is null) outcome = Threw(check, outcome.Time, e) with { Detail = "closing the device: " + Summarize(e) };
            exception = exception is null ? e : new AggregateException(exception, e);
        }
        return outcome;
    }

    /// <summary>The word the tables use for <paramref name="status"/>.</summary>
    public static string Describe(CheckStatus status) => status switch
    {
        CheckStatus.Passed => "pass",
        CheckStatus.Failed => "FAIL",
        CheckStatus.Threw => "FAIL (threw)",
        _ => "NOT RUN",
    };

    /// <summary>The progress text after "name ... ": result, time, measures and, unless it passed, the detail.</summary>
    public static string Progress(CheckOutcome outcome)
    {
        if (outcome.Status == CheckStatus.NotRun) return outcome.Detail;
        string measures = outcome.Result is { } r ? $", max |error| {Format.Number(r.MaxAbsoluteError)}, worst {Format.Number(r.WorstRatio)} of tolerance" : "";
        string detail = outcome.Status == CheckStatus.Passed ? "" : $": {outcome.Detail}";
        return $"{Describe(outcome.Status)} in {Format.Milliseconds(outcome.Time)} ms{measures}{detail}";
    }

    /// <summary>The exception's type and first line, and "(sticky: the context is lost)" for a sticky fault.</summary>
    public static string Summarize(Exception e)
    {
        int end = e.Message.IndexOfAny(['\r', '\n']);
        string line = $"{e.GetType().Name}: {(end < 0 ? e.Message : e.Message[..end])}";
        return StickyFault.Classify(e) is { } fault && !line.Contains(fault, StringComparison.Ordinal) ? $"{line} ({fault})" : line;
    }

    private static CheckOutcome Threw(DeviceCheck check, TimeSpan time, Exception e) =>
        new(check, CheckStatus.Threw, null, time, Summarize(e)) { Fault = StickyFault.Classify(e) };
}
