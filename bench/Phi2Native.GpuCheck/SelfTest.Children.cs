using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;

namespace Phi2Native.GpuCheck;

/// <summary>The self-test's fault handling: classifying sticky faults, and children that fault, crash or hang.</summary>
internal static partial class SelfTest
{
    /// <summary>The per-child limit in the planted run: the planted hang is killed after it and the grace.</summary>
    private static readonly TimeSpan PlantedChildLimit = TimeSpan.FromSeconds(3);

    /// <summary><see cref="StickyFault.Classify"/> on planted exceptions; returns how many were asserted.</summary>
    private static int Classifications(List<string> problems)
    {
        (string What, Exception? Exception, string? Expected)[] cases =
        [
            ("illegal address", StickyFault.Planted(code: 700), "CUDA_ERROR_ILLEGAL_ADDRESS"),
            ("launch failed", StickyFault.Planted(code: 719), "CUDA_ERROR_LAUNCH_FAILED"),
            ("misaligned address", StickyFault.Planted(code: 716), "CUDA_ERROR_MISALIGNED_ADDRESS"),
            ("illegal instruction", StickyFault.Planted(code: 715), "CUDA_ERROR_ILLEGAL_INSTRUCTION"),
            ("hardware stack error", StickyFault.Planted(code: 714), "CUDA_ERROR_HARDWARE_STACK_ERROR"),
            ("device assert", StickyFault.Planted(code: 710), "CUDA_ERROR_ASSERT"),
            ("wrapped as an inner exception", new InvalidOperationException("a launch failed", StickyFault.Planted()), "CUDA_ERROR_ILLEGAL_ADDRESS"),
            ("in an aggregate", new AggregateException(new IOException("x"), StickyFault.Planted(code: 719)), "CUDA_ERROR_LAUNCH_FAILED"),
            ("out of memory (not sticky)", StickyFault.Planted("cuMemAlloc", 2), null),
            ("an invalid value (not sticky)", StickyFault.Planted("cuLaunchKernel", 1), null),
            ("a cuBLAS status with a sticky number", new CudaException(CudaException.CublasLibrary, "cublasGemmEx", 700, "planted", "planted"), null),
            ("an emulator error", new EmulatedDeviceException("Launch", "planted"), null),
            ("no exception", null, null),
        ];
        foreach (var (what, exception, expected) in cases)
        {
            string? found = StickyFault.Classify(exception);
            if (found != expected) problems.Add($"sticky fault classification, {what}: {found ?? "not sticky"}, expected {expected ?? "not sticky"}");
        }
        return cases.Length;
    }

    /// <summary>
    /// The planted family in real child processes of this program (--child-checks self-test --emulated): a sticky
    /// fault, a crash (the child kills itself) and a hang (killed at its limit) must each cost one check, named with
    /// what happened, and the check after each must pass in a fresh child.
    /// </summary>
    private static List<CheckOutcome> Children(List<string> problems, TextWriter output)
    {
        var checks = PlantedChecks.All;
        var options = RunnerOptions.Parse(["--emulated"]);
        var log = new StringWriter();
        var progress = new ConsoleProgress<CheckOutcome>(log, checks.Count, CheckRunner.Progress);
        ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
            ChildProcess.Run(ChildCommand.Self(CheckStage.ChildArguments(ChildMain.PlantedFamily, options, from, limit)), killAfter, stdout, stderr);
        var outcomes = SupervisedCases.Run([.. checks.Select(c => c.Name)], launch, Deadline.After(TimeSpan.FromSeconds(60)), TimeSpan.FromSeconds(1),
            PlantedChildLimit, (i, r) => r.ToCheck(checks[i]), progress, out int children).ToList();

        (CheckStatus Status, string Detail)[] expected =
        [
            (CheckStatus.Passed, ""),
            (CheckStatus.Threw, "CUDA_ERROR_ILLEGAL_ADDRESS"),
            (CheckStatus.Passed, ""),
            (CheckStatus.Threw, "its child process was killed by SIGKILL (signal 9) while running it"),
            (CheckStatus.Passed, ""),
            (CheckStatus.Threw, "its child process was killed after"),
            (CheckStatus.Passed, ""),
        ];
        int before = problems.Count;
        if (outcomes.Count != expected.Length) problems.Add($"children: {outcomes.Count} outcomes for {expected.Length} planted checks");
        for (int i = 0; i < Math.Min(outcomes.Count, expected.Length); i++)
        {
            var o = outcomes[i];
            if (o.Status != expected[i].Status || !o.Detail.Contains(expected[i].Detail, StringComparison.Ordinal))
                problems.Add($"children: '{o.Check.Name}' was {o.Status} ({o.Detail}), expected {expected[i].Status} ({expected[i].Detail})");
        }
        if (outcomes.Count > 1 && outcomes[1].Fault != "CUDA_ERROR_ILLEGAL_ADDRESS") problems.Add($"children: the sticky fault is not marked: {outcomes[1].Fault ?? "none"}");
        if (children != 4) problems.Add($"children: {children} child processes, expected 4 (a fresh one after the fault, the crash and the hang)");
        if (problems.Count > before) output.WriteLine($"self-test: the planted children's log:\n{log}");
        return outcomes;
    }

    /// <summary>
    /// The compute-sanitizer stage's wiring with a planted sanitizer (a shell script that drops the tool's options,
    /// runs the child it was given and reports one error): each tool must run the chosen check in a child under it,
    /// read the error summary and fail; returns the tools run.
    /// </summary>
    private static int PlantedSanitizer(List<string> problems, TextWriter output)
    {
        if (OperatingSystem.IsWindows()) return 0; // the planted sanitizer is a shell script; the runner is for Linux
        string folder = Path.Combine(Path.GetTempPath(), $"phi2native-self-test-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        string script = Path.Combine(folder, "compute-sanitizer");
        try
        {
            File.WriteAllText(script, """
                #!/bin/sh
                # planted by the GPU runner's self-test: options come in pairs before the program
                while [ "${1#--}" != "$1" ]; do shift 2; done
                "$@"
                status=$?
                echo "========= ERROR SUMMARY: 1 error"
                exit $status
                """);
            File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var options = RunnerOptions.Parse(["--emulated", "--filter", "transpose_f32 [1, 70]"]);
            var log = new StringWriter();
            var runs = SanitizerStage.Run(script, options, Deadline.After(TimeSpan.FromSeconds(60)), log, out var result);
            int before = problems.Count;
            if (runs.Count != SanitizerStage.Tools.Count) problems.Add($"sanitizer: {runs.Count} tool runs, expected {SanitizerStage.Tools.Count}");
            foreach (var run in runs)
            {
                if (run.Errors != 1 || run.Summaries != 1 || !run.Failed || run.Outcomes.Count != 1 || run.Outcomes[0].Status != CheckStatus.Passed)
                    problems.Add($"sanitizer {run.Tool}: {run.Errors} error(s) in {run.Summaries} summaries, failed {run.Failed}, " +
                                 $"checks {string.Join(", ", run.Outcomes.Select(o => o.Status))}; expected 1 error, failed, 1 check passed");
            }
            if (StageRunner.StatusOf(result) != StageStatus.Failed) problems.Add($"sanitizer: the stage was {StageRunner.StatusOf(result)}, expected Failed ({result.Note})");
            if (problems.Count > before) output.WriteLine($"self-test: the planted sanitizer's log:\n{log}");
            return runs.Count;
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
