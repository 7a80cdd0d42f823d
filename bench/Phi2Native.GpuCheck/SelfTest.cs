using Phi2Native.Cuda;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.GpuCheck;

/// <summary>
/// The runner's own check, run by CI on the emulator (--self-test): planted checks that pass, answer wrong, leak,
/// throw, or get no device, must be classified as such, never stop the run, and earn the right exit code; and the
/// GPU-only reporting (NVRTC table, "compiled" column) must read planted compile reports right. A runner that
/// counted a thrown check as passed would make every GPU session look green.
/// </summary>
internal static class SelfTest
{
    /// <summary>Runs the planted cases; prints their table and one verdict line; returns 0 when all are right.</summary>
    public static int Run(TextWriter output)
    {
        DeviceCheck passes = new("planted: passes", ["copy"], d => RoundTrip(d, wrong: false, leak: false));
        DeviceCheck wrong = new("planted: wrong answer", ["copy"], d => RoundTrip(d, wrong: true, leak: false));
        DeviceCheck leaks = new("planted: leaks", ["copy"], d => RoundTrip(d, wrong: false, leak: true));
        DeviceCheck throws = new("planted: throws", ["copy"], d =>
        {
            d.Free(new DevicePtr(0x1000)); // never allocated: the emulator refuses it
            throw new InvalidOperationException("unreachable: the emulator accepted a wild free");
        });
        static IDeviceApi Fresh() => new EmulatedDevice();
        static void Close(IDeviceApi d) => d.Dispose();

        var outcomes = CheckRunner.RunAll([passes, wrong, leaks, throws], Fresh, Close, TimeSpan.FromMinutes(1), TextWriter.Null).ToList();
        outcomes.Add(CheckRunner.RunOne(passes with { Name = "planted: no device" }, () => throw new InvalidOperationException("no device here"), Close, out _));
        outcomes.AddRange(CheckRunner.RunAll([passes with { Name = "planted: out of time" }], Fresh, Close, TimeSpan.Zero, TextWriter.Null));
        CheckStatus[] expected = [CheckStatus.Passed, CheckStatus.Failed, CheckStatus.Failed, CheckStatus.Threw, CheckStatus.Threw, CheckStatus.NotRun];

        var problems = new List<string>();
        for (int i = 0; i < expected.Length; i++)
            if (outcomes[i].Status != expected[i]) problems.Add($"'{outcomes[i].Check.Name}' was {outcomes[i].Status}, expected {expected[i]} ({outcomes[i].Detail})");
        if (!outcomes[2].Detail.Contains("unfreed", StringComparison.Ordinal)) problems.Add($"the leak is not named: {outcomes[2].Detail}");
        if (!outcomes[3].Detail.StartsWith(nameof(EmulatedDeviceException), StringComparison.Ordinal)) problems.Add($"the exception is not named: {outcomes[3].Detail}");

        // Exit codes: only a complete, compiled, all-passing run is 0.
        void ExpectExit(string what, RunSummary summary, int code)
        {
            if (summary.ExitCode != code) problems.Add($"{what}: exit {summary.ExitCode}, expected {code} ({summary.LastLine})");
        }
        var passed = outcomes.Take(1).ToList();
        ExpectExit("all passed", new RunSummary("emu", passed, 1, null, true), 0);
        ExpectExit("fewer checks than the catalog", new RunSummary("emu", passed, 2, null, true), 1);
        ExpectExit("a subset chosen by --filter", new RunSummary("emu", passed, 2, "passes", true), 0);
        ExpectExit("a kernel did not compile", new RunSummary("emu", passed, 1, null, false), 1);
        ExpectExit("the planted run", new RunSummary("emu", outcomes, outcomes.Count, null, true), 1);

        // The benchmark stage's bookkeeping: a case that threw fails the run, one the time limit left out does not;
        // which options run the stage, at which sizes.
        BenchOutcome Bench(BenchStatus status) => new("planted bench", "-", "-", status, 1, 1, "x", 1, "");
        void ExpectBenchExit(string what, RunSummary? checks, BenchStatus[] bench, int code)
        {
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
        (string[] Args, bool Checks, bool Bench, bool Tiny)[] stages =
        [
            ([], true, true, false), (["--no-bench"], true, false, false), (["--bench-only"], false, true, false),
            (["--emulated"], true, false, true), (["--emulated", "--bench-tiny"], true, true, true),
            (["--emulated", "--bench-only"], false, true, true), (["--bench-tiny"], true, true, true),
        ];
        foreach (var (args, checks, bench, tiny) in stages)
        {
            var o = RunnerOptions.Parse(args);
            if (o.RunsChecks != checks || o.RunsBenchmarks != bench || (o.BenchSizes == BenchSizes.Tiny) != tiny)
                problems.Add($"options [{string.Join(" ", args)}]: checks {o.RunsChecks}, benchmarks {o.RunsBenchmarks} at {o.BenchSizes.Label}; " +
                             $"expected {checks}, {bench}, {(tiny ? "tiny" : "Phi-2")}");
        }

        // The GPU-only reporting: the NVRTC table and the "compiled" column, over planted sources and reports.
        var sources = new KernelSourceCatalog(new Dictionary<string, string>
        {
            ["good.cu"] = "PHI2_KERNEL void k_good(int n) {}",
            ["bad.cu"] = "PHI2_KERNEL void k_bad(int n) {}",
        }, []);
        KernelCompileReport[] reports = [new("good.cu", true, true, 0.01, null), new("bad.cu", false, false, 0.2, "bad.cu(1): error: planted")];
        var column = Reports.CompiledColumn(sources, reports);
        (string[] Kernels, string Expected, Func<DeviceCheck, string> Column)[] cells =
        [
            (["k_good"], "yes", column), (["k_good", "k_bad"], "NO", column), (["cublasGemmEx"], "n/a", column),
            (["k_good"], "?", Reports.CompiledColumn(sources, null)),
        ];
        foreach (var (kernels, expectedCell, columnOf) in cells)
        {
            string cell = columnOf(passes with { Kernels = kernels });
            if (cell != expectedCell) problems.Add($"compiled column for [{string.Join(",", kernels)}]: '{cell}', expected '{expectedCell}'");
        }

        Reports.WriteCompileTable(output, reports, markdown: false);
        output.WriteLine();
        Reports.WriteCheckTable(output, outcomes, _ => "emu", markdown: false);
        output.WriteLine();
        foreach (string problem in problems) output.WriteLine($"self-test: WRONG: {problem}");
        output.WriteLine(problems.Count == 0
            ? $"self-test: all {outcomes.Count} planted checks, 5 exit codes, {cells.Length} compiled cells, 6 benchmark exit codes and {stages.Length} stage choices as expected"
            : $"self-test FAILED: {problems.Count} problem(s)");
        return problems.Count == 0 ? 0 : 1;
    }

    private static CheckResult RoundTrip(IDeviceApi device, bool wrong, bool leak)
    {
        float[] values = [1f, 2f, 3f];
        using var buffer = DeviceBuffer.Upload(device, DType.F32, values);
        if (leak) device.Allocate(256);
        float[] expected = wrong ? [1f, 2f, 4f] : values;
        return CheckResult.Compare("y", buffer.Download(), expected, 0, 0);
    }
}
