using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>
/// The runner's own check, run by CI on the emulator (--self-test): planted checks that pass, answer wrong, leak,
/// throw, hit a sticky CUDA fault, or get no device, must be classified as such, never stop the run, and earn the
/// right exit code; children that fault, crash or hang must cost one check each (SelfTest.Children.cs); and the
/// GPU-only reporting (NVRTC table, "compiled" column) must read planted compile reports right. A runner that
/// counted a thrown check as passed would make every GPU session look green.
/// </summary>
internal static partial class SelfTest
{
    /// <summary>Runs the planted cases; prints their tables and one verdict line; returns 0 when all are right.</summary>
    public static int Run(TextWriter output)
    {
        var problems = new List<string>();
        var outcomes = InProcessChecks(problems);
        int exitCodes = ExitCodes(outcomes, problems);
        int classifications = Classifications(problems);
        var children = Children(problems, output);
        int sanitizerTools = PlantedSanitizer(problems, output);
        int cells = CompiledCells(output, problems);

        output.WriteLine();
        Reports.WriteCheckTable(output, [.. outcomes, .. children], _ => "emu", markdown: false);
        output.WriteLine();
        foreach (string problem in problems) output.WriteLine($"self-test: WRONG: {problem}");
        output.WriteLine(problems.Count == 0
            ? $"self-test: all {outcomes.Count} planted checks, {children.Count} planted checks in child processes (a sticky fault, a crash, " +
              $"a hang), {sanitizerTools} tools under a planted compute-sanitizer, {classifications} fault classifications, {exitCodes} exit codes and " +
              $"stage choices, and {cells} compiled cells as expected"
            : $"self-test FAILED: {problems.Count} problem(s)");
        return problems.Count == 0 ? 0 : 1;
    }

    /// <summary>Planted checks in this process: each is classified, and a sticky fault ends the run's use of the context.</summary>
    private static List<CheckOutcome> InProcessChecks(List<string> problems)
    {
        static IDeviceApi Fresh() => new EmulatedDevice();
        static void Close(IDeviceApi d) => d.Dispose();
        var plenty = Deadline.After(TimeSpan.FromMinutes(1));
        var quiet = new ConsoleProgress<CheckOutcome>(TextWriter.Null, 1, CheckRunner.Progress);

        var outcomes = CheckRunner.RunAll([PlantedChecks.Passes, PlantedChecks.Wrong, PlantedChecks.Leaks, PlantedChecks.Throws], Fresh, Close, plenty, quiet).ToList();
        outcomes.Add(CheckRunner.RunOne(PlantedChecks.Passes with { Name = "planted: no device" }, () => throw new InvalidOperationException("no device here"), Close, out _));
        outcomes.AddRange(CheckRunner.RunAll([PlantedChecks.Passes with { Name = "planted: out of time" }], Fresh, Close, Deadline.After(TimeSpan.Zero), quiet));
        outcomes.AddRange(CheckRunner.RunAll([PlantedChecks.StickyFault, PlantedChecks.Passes with { Name = "planted: after a sticky fault" }], Fresh, Close, plenty, quiet));
        CheckStatus[] expected = [CheckStatus.Passed, CheckStatus.Failed, CheckStatus.Failed, CheckStatus.Threw, CheckStatus.Threw, CheckStatus.NotRun,
            CheckStatus.Threw, CheckStatus.NotRun];
        for (int i = 0; i < expected.Length; i++)
            if (outcomes[i].Status != expected[i]) problems.Add($"'{outcomes[i].Check.Name}' was {outcomes[i].Status}, expected {expected[i]} ({outcomes[i].Detail})");
        if (!outcomes[2].Detail.Contains("unfreed", StringComparison.Ordinal)) problems.Add($"the leak is not named: {outcomes[2].Detail}");
        if (!outcomes[3].Detail.StartsWith(nameof(EmulatedDeviceException), StringComparison.Ordinal)) problems.Add($"the exception is not named: {outcomes[3].Detail}");
        if (outcomes.Take(6).Any(o => o.Fault is not null || o.ContextLost)) problems.Add("an ordinary failure was taken for a sticky fault");
        if (outcomes[6].Fault != "CUDA_ERROR_ILLEGAL_ADDRESS" || !outcomes[6].Detail.Contains("CUDA_ERROR_ILLEGAL_ADDRESS", StringComparison.Ordinal))
            problems.Add($"the sticky fault is not named: fault {outcomes[6].Fault ?? "none"}, detail {outcomes[6].Detail}");
        if (!outcomes[7].ContextLost || !outcomes[7].Detail.Contains("context lost after 'planted: sticky fault'", StringComparison.Ordinal))
            problems.Add($"the check after the sticky fault does not say the context was lost: {outcomes[7].Detail}");
        return outcomes;
    }

    /// <summary>Exit codes of checks and benchmarks, and which options run which stages; returns how many were asserted.</summary>
    private static int ExitCodes(List<CheckOutcome> outcomes, List<string> problems)
    {
        int count = 0;
        // Only a complete, compiled, all-passing run is 0.
        void ExpectExit(string what, RunSummary summary, int code)
        {
            count++;
            if (summary.ExitCode != code) problems.Add($"{what}: exit {summary.ExitCode}, expected {code} ({summary.LastLine})");
        }
        var passed = outcomes.Take(1).ToList();
        ExpectExit("all passed", new RunSummary("emu", passed, 1, null, true), 0);
        ExpectExit("fewer checks than the catalog", new RunSummary("emu", passed, 2, null, true), 1);
        ExpectExit("a subset chosen by --filter", new RunSummary("emu", passed, 2, "passes", true), 0);
        ExpectExit("a kernel did not compile", new RunSummary("emu", passed, 1, null, false), 1);
        ExpectExit("the planted run", new RunSummary("emu", outcomes, outcomes.Count, null, true), 1);

        // The benchmark stage's bookkeeping: a case that threw fails the run, one the time limit left out does not.
        BenchOutcome Bench(BenchStatus status) => new("planted bench", "-", "-", status, 1, 1, "x", 1, "");
        void ExpectBenchExit(string what, RunSummary? checks, BenchStatus[] bench, int code)
        {
            count++;
            int exit = Benchmarks.ExitCode(checks, [.. bench.Select(Bench)]);
            if (exit != code) problems.Add($"benchmarks, {what}: exit {exit}, expected {code}");
        }
        var allPassed = new RunSummary("emu", passed, 1, null, true);
        ExpectBenchExit("all ran", allPassed, [BenchStatus.Ran, BenchStatus.Ran], 0);
        ExpectBenchExit("one not run (time)", allPassed, [BenchStatus.Ran, BenchStatus.NotRun], 0);
        ExpectBenchExit("one threw", allPassed, [BenchStatus.Ran, BenchStatus.Threw], 1);
        ExpectBenchExit("--bench-only, all ran", null, [BenchStatus.Ran], 0);
        ExpectBenchExit("--bench-only, one threw", null, [BenchStatus.Threw, BenchStatus.NotRun], 1);
        ExpectBenchExit("a check failed", new RunSummary("emu", outcomes, outcomes.Count, null, true), [BenchStatus.Ran], 1);

        // Which options run the stages, at which sizes.
        (string[] Args, bool Checks, bool Bench, bool Tiny)[] stages =
        [
            ([], true, true, false), (["--no-bench"], true, false, false), (["--bench-only"], false, true, false),
            (["--emulated"], true, false, true), (["--emulated", "--bench-tiny"], true, true, true),
            (["--emulated", "--bench-only"], false, true, true), (["--bench-tiny"], true, true, true),
        ];
        foreach (var (args, checks, bench, tiny) in stages)
        {
            count++;
            var o = RunnerOptions.Parse(args);
            if (o.RunsChecks != checks || o.RunsBenchmarks != bench || (o.BenchSizes == BenchSizes.Tiny) != tiny)
                problems.Add($"options [{string.Join(" ", args)}]: checks {o.RunsChecks}, benchmarks {o.RunsBenchmarks} at {o.BenchSizes.Label}; " +
                             $"expected {checks}, {bench}, {(tiny ? "tiny" : "Phi-2")}");
        }
        // The stage table: the runner's default limit leaves its reserve inside the budgets' total, and every family
        // compute-sanitizer is meant to run still exists.
        count++;
        if (RunnerOptions.DefaultTimeLimit + Stages.Reserve != Stages.Total || Stages.Total != TimeSpan.FromSeconds(340))
            problems.Add($"stage budgets: total {Stages.Total}, default limit {RunnerOptions.DefaultTimeLimit}; expected 340 s and 330 s");
        foreach (string family in SanitizerStage.UnknownFamilies()) problems.Add($"compute-sanitizer names a family the catalog lacks: {family}");
        return count;
    }

    /// <summary>The NVRTC table and the "compiled" column over planted sources and reports; returns the cells checked.</summary>
    private static int CompiledCells(TextWriter output, List<string> problems)
    {
        var sources = new KernelSourceCatalog(new Dictionary<string, string>
        {
            ["good.cu"] = "PHI2_KERNEL void k_good(int n) {}",
            ["bad.cu"] = "PHI2_KERNEL void k_bad(int n) {}",
        }, []);
        KernelCompileReport[] reports = [new("good.cu", true, true, 0.01, null), new("bad.cu", false, false, 0.2, "bad.cu(1): error: planted")];
        var column = Reports.CompiledColumn(sources, reports);
        var notRunColumn = Reports.CompiledColumn(sources, reports.Take(1).ToList());
        (string[] Kernels, string Expected, Func<DeviceCheck, string> Column)[] cells =
        [
            (["k_good"], "yes", column), (["k_good", "k_bad"], "NO", column), (["cublasGemmEx"], "n/a", column),
            (["k_good"], "?", Reports.CompiledColumn(sources, null)), (["k_bad"], "?", notRunColumn),
        ];
        foreach (var (kernels, expectedCell, columnOf) in cells)
        {
            string cell = columnOf(PlantedChecks.Passes with { Kernels = kernels });
            if (cell != expectedCell) problems.Add($"compiled column for [{string.Join(",", kernels)}]: '{cell}', expected '{expectedCell}'");
        }
        Reports.WriteCompileTable(output, reports, markdown: false, notRun: ["late.cu"]);
        return cells.Length;
    }
}
