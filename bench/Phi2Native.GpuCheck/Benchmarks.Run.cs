using System.Diagnostics;
using System.Globalization;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;

namespace Phi2Native.GpuCheck;

/// <summary>How one benchmark case ended.</summary>
internal enum BenchStatus
{
    /// <summary>Timed.</summary>
    Ran,
    /// <summary>Threw (the device failed, the op is unsupported, or the case has a bug), or its process crashed or hung in it.</summary>
    Threw,
    /// <summary>Never started: the time ran out first, or an earlier case's fault killed the context.</summary>
    NotRun,
}

/// <summary>One case's result: median milliseconds per repetition and a rate in <paramref name="Unit"/>.</summary>
/// <param name="Reps">Timed repetitions the median is over (after warm-up).</param>
internal sealed record BenchOutcome(string Name, string Shape, string DType, BenchStatus Status, double Ms, double Rate, string Unit, int Reps, string Detail)
{
    /// <summary>Wall seconds of the whole case (building, warm-up, repetitions).</summary>
    public double WallSeconds { get; init; }

    /// <summary>The sticky CUDA error (<see cref="StickyFault"/>) this case threw, which ended its process's context; else null.</summary>
    public string? Fault { get; init; }

    /// <summary>Not run because an earlier case's sticky fault killed the context (a fresh process may still run it).</summary>
    public bool ContextLost { get; init; }

    /// <summary>
    /// One repetition by the profiler's roofline model of this GPU (modelled, never measured): its launches' declared
    /// costs, recorded in one extra repetition; NaN for a case that records none (a difference of two cases).
    /// </summary>
    public double ModelledMs { get; init; } = double.NaN;
}

/// <summary>The benchmark stage's bookkeeping: running the cases in order within a deadline, the table, the last line, the exit code.</summary>
internal sealed partial class Benchmarks
{
    /// <summary>
    /// Runs the cases from <paramref name="from"/> on, on <paramref name="device"/> (a backend over it, not owning it)
    /// at <paramref name="sizes"/>; cases not started before <paramref name="deadline"/> are
    /// <see cref="BenchStatus.NotRun"/>, and so are those after a sticky fault (<see cref="StickyFault"/>: the
    /// context is dead). Never throws for a case: its exception becomes its row. <paramref name="observer"/> hears of
    /// each case (indices count from <paramref name="from"/>).
    /// </summary>
    public static IReadOnlyList<BenchOutcome> RunAll(IDeviceApi device, BenchSizes sizes, int from, Deadline deadline, ICaseObserver<BenchOutcome> observer)
    {
        var outcomes = new List<BenchOutcome>(Cases.Length);
        using var backend = new CudaBackend(device, ownsDevice: false);
        var bench = new Benchmarks(backend, sizes);
        BenchOutcome? fault = null;
        for (int i = from; i < Cases.Length; i++)
        {
            var c = Cases[i];
            int index = i - from;
            var needs = sizes == BenchSizes.Phi2 ? c.Needs : TimeSpan.Zero;
            if (fault is not null || deadline.IsPast || deadline.Remaining < needs)
            {
                string why = fault is not null ? $"context lost after '{fault.Name}' ({fault.Fault})"
                    : deadline.IsPast ? deadline.Why
                    : $"it needs about {Deadline.Seconds(needs)} s and {Deadline.Seconds(deadline.Remaining)} s are left";
                var notRun = new BenchOutcome(c.Name, "-", "-", BenchStatus.NotRun, 0, 0, "", 0, $"not run: {why}") { ContextLost = fault is not null };
                outcomes.Add(notRun);
                observer.Finished(index, c.Name, notRun, null);
                continue;
            }
            observer.Starting(index, c.Name);
            var watch = Stopwatch.StartNew();
            BenchOutcome outcome;
            Exception? exception = null;
            try
            {
                outcome = c.Run(bench) with { Name = c.Name, ModelledMs = bench.TakeModelledMs() };
                backend.Synchronize();
            }
            catch (Exception e)
            {
                exception = e;
                outcome = new BenchOutcome(c.Name, "-", DtName, BenchStatus.Threw, 0, 0, "", 0, CheckRunner.Summarize(e)) { Fault = StickyFault.Classify(e) };
                if (outcome.Fault is not null) fault = outcome;
            }
            outcome = outcome with { WallSeconds = watch.Elapsed.TotalSeconds };
            outcomes.Add(outcome);
            observer.Finished(index, c.Name, outcome, exception?.ToString());
            if (fault is null) TryRelease(backend);
        }
        // The prefill case's model, when the decode case did not run to dispose it.
        if (fault is null) bench._generationModel?.Dispose();
        return outcomes;
    }

    /// <summary>The progress text after "case ... ": time and rate, or why it failed or did not run.</summary>
    public static string Progress(BenchOutcome o)
    {
        string wall = Format.Seconds(o.WallSeconds);
        if (o.Status == BenchStatus.NotRun) return o.Detail;
        if (o.Status == BenchStatus.Threw) return $"FAIL (threw) after {wall} s: {o.Detail}";
        string median = o.Reps > 0 ? $"median of {o.Reps}; " : "";
        return $"{FormatMs(o.Ms)} ms, {FormatRate(o.Rate)} {o.Unit} ({median}{wall} s)" + (o.Detail.Length > 0 ? "; " + o.Detail : "");
    }

    /// <summary>
    /// The benchmark table: case, shape, dtype, ms, rate, unit, reps, and the roofline model's ms beside the measured
    /// ms with their ratio (how the model is calibrated: bench/RESULTS.md records it); then the detail of each case that
    /// did not run cleanly.
    /// </summary>
    public static void WriteTable(TextWriter output, IReadOnlyList<BenchOutcome> outcomes, bool markdown)
    {
        var table = new TextTable("benchmark", "shape", "dtype", "ms", "rate", "unit", "reps", "modelled ms", "measured / modelled");
        foreach (var o in outcomes)
        {
            bool ran = o.Status == BenchStatus.Ran, modelled = ran && double.IsFinite(o.ModelledMs) && o.ModelledMs > 0;
            table.Add(o.Name, o.Shape, o.DType, ran ? FormatMs(o.Ms) : "-", ran ? FormatRate(o.Rate) : "-",
                ran ? o.Unit : o.Status == BenchStatus.Threw ? "FAIL (threw)" : "NOT RUN", ran && o.Reps > 0 ? o.Reps.ToString(CultureInfo.InvariantCulture) : "-",
                modelled ? FormatMs(o.ModelledMs) : "-", modelled ? (o.Ms / o.ModelledMs).ToString("0.00", CultureInfo.InvariantCulture) : "-");
        }
        table.Write(output, markdown);
        var notes = outcomes.Where(o => o.Status != BenchStatus.Ran || o.Detail.Length > 0).ToList();
        if (notes.Count == 0) return;
        output.WriteLine();
        foreach (var o in notes) output.WriteLine($"{o.Name}: {o.Detail}");
    }

    /// <summary>"benchmarks: N of M cases ran on DEVICE (sizes), K threw, J not run".</summary>
    public static string Line(IReadOnlyList<BenchOutcome> outcomes, string device, BenchSizes sizes)
    {
        int ran = outcomes.Count(o => o.Status == BenchStatus.Ran), threw = outcomes.Count(o => o.Status == BenchStatus.Threw);
        int notRun = outcomes.Count(o => o.Status == BenchStatus.NotRun);
        string line = $"benchmarks: {ran} of {outcomes.Count} cases ran on {device} at {sizes.Label} sizes";
        if (threw > 0) line += $"; {threw} threw";
        if (notRun > 0) line += $"; {notRun} not run";
        return line;
    }

    /// <summary>
    /// The run's exit code: the checks' (<see cref="RunSummary.ExitCode"/>; null with --bench-only), and 1 when a
    /// benchmark threw. Benchmarks the time limit left unrun do not fail the run: they are reported.
    /// </summary>
    public static int ExitCode(RunSummary? checks, IReadOnlyList<BenchOutcome>? bench)
    {
        bool threw = bench?.Any(b => b.Status == BenchStatus.Threw) ?? false;
        return (checks?.ExitCode ?? 0) == 0 && !threw ? 0 : 1;
    }

    private static void TryRelease(CudaBackend backend)
    {
        try
        {
            backend.ReleaseCachedMemory();
        }
        catch (Exception)
        {
            // A failed release after a failed case: the next case reports whatever is still wrong.
        }
    }

    private static string FormatMs(double ms) => ms.ToString(ms < 10 ? "0.000" : "0.0", CultureInfo.InvariantCulture);

    private static string FormatRate(double rate) =>
        double.IsNaN(rate) ? "-" : double.IsInfinity(rate) ? "inf" : rate.ToString(rate >= 100 ? "0" : rate >= 1 ? "0.0" : "0.000", CultureInfo.InvariantCulture);
}
