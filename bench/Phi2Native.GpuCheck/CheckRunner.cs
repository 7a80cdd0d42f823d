using System.Diagnostics;
using System.Globalization;
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
    /// <summary>The check threw (the device failed, or the check has a bug).</summary>
    Threw,
    /// <summary>Never started: the time limit was reached first.</summary>
    NotRun,
}

/// <summary>One check's outcome, as the runner reports it.</summary>
/// <param name="Check">The check.</param>
/// <param name="Status">How it ended.</param>
/// <param name="Result">The comparison, when the body returned one.</param>
/// <param name="Time">Wall time of the body and a final synchronize (uploads, launches, downloads and the CPU reference).</param>
/// <param name="Detail">The worst element, the leak, the exception's message, or why it did not run.</param>
internal sealed record CheckOutcome(DeviceCheck Check, CheckStatus Status, CheckResult? Result, TimeSpan Time, string Detail);

/// <summary>
/// Runs device checks and never lets one of them stop the run: an exception becomes that check's failure with its
/// message, so a GPU session always ends with the whole table, however many checks break.
/// </summary>
internal static class CheckRunner
{
    /// <summary>
    /// Runs <paramref name="checks"/> in order. Each gets a device from <paramref name="acquire"/> and hands it back to
    /// <paramref name="release"/> (a GPU is shared, as a context is costly; the emulator gives each check a fresh
    /// device, as the NUnit fixture does). Checks not started within <paramref name="timeLimit"/> are
    /// <see cref="CheckStatus.NotRun"/>. One progress line per check goes to <paramref name="progress"/>, with the
    /// full exception (stack included) when a check throws.
    /// </summary>
    public static IReadOnlyList<CheckOutcome> RunAll(IReadOnlyList<DeviceCheck> checks, Func<IDeviceApi> acquire, Action<IDeviceApi> release,
        TimeSpan timeLimit, TextWriter progress)
    {
        var outcomes = new List<CheckOutcome>(checks.Count);
        var elapsed = Stopwatch.StartNew();
        int width = checks.Count.ToString(CultureInfo.InvariantCulture).Length;
        for (int i = 0; i < checks.Count; i++)
        {
            var check = checks[i];
            string position = $"[{(i + 1).ToString(CultureInfo.InvariantCulture).PadLeft(width)}/{checks.Count}]";
            if (elapsed.Elapsed >= timeLimit)
            {
                outcomes.Add(new CheckOutcome(check, CheckStatus.NotRun, null, TimeSpan.Zero,
                    $"not run: the time limit ({timeLimit.TotalSeconds:0} s) was reached"));
                progress.WriteLine($"{position} {check.Name}: not run (time limit)");
                continue;
            }
            progress.Write($"{position} {check.Name} ... ");
            progress.Flush(); // a check that hangs the GPU leaves its name as the log's last line
            var outcome = RunOne(check, acquire, release, out var exception);
            outcomes.Add(outcome);
            string measures = outcome.Result is { } r ? $", max |error| {Format.Number(r.MaxAbsoluteError)}, worst {Format.Number(r.WorstRatio)} of tolerance" : "";
            string detail = outcome.Status == CheckStatus.Passed ? "" : $": {outcome.Detail}";
            progress.WriteLine($"{Describe(outcome.Status)} in {Format.Milliseconds(outcome.Time)} ms{measures}{detail}");
            if (exception is not null) progress.WriteLine(exception.ToString());
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
            // time then covers all of the check's device work.
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
            outcome = new CheckOutcome(check, CheckStatus.Threw, null, watch.Elapsed, Summarize(e));
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
            if (exception is null) outcome = outcome with { Status = CheckStatus.Threw, Detail = "closing the device: " + Summarize(e) };
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

    private static string Summarize(Exception e)
    {
        int end = e.Message.IndexOfAny(['\r', '\n']);
        return $"{e.GetType().Name}: {(end < 0 ? e.Message : e.Message[..end])}";
    }
}
