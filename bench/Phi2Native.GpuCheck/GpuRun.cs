using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;
using Phi2Native.Cuda.Resources;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>
/// A run on the first GPU, stage by stage (<see cref="Stages"/>): the probe first, so what the machine has is in the
/// log whatever fails later; then NVRTC, the checks, compute-sanitizer, the benchmarks and the peers, each within its
/// budget; then the tables.
/// </summary>
internal static class GpuRun
{
    /// <summary>Runs the stages; returns the exit code.</summary>
    public static int Run(RunnerOptions options, IReadOnlyList<FamilySelection> selection, int catalogCount, TextWriter output)
    {
        var stages = new StageRunner(new StopwatchClock(), options.TimeLimit);
        var state = new State();
        stages.Run(Stages.ProbeAndCompile, d => ProbeAndCompile(options, state, d, output), output);
        if (state.NoGpu) return 0; // not a failure: the same script runs wherever the runner was carried, GPU or not
        if (!state.Opened) return 1; // said why above
        // The children open their own contexts; this one would only hold memory (or, in exclusive-process compute
        // mode, the GPU itself) while they run.
        if (!options.InProcess) state.CloseQuietly(output);
        try
        {
            IReadOnlyList<CheckOutcome> outcomes = [];
            if (!options.RunsChecks) stages.Skip(Stages.Checks, "--bench-only");
            else
            {
                stages.Run(Stages.Checks, d =>
                {
                    output.WriteLine();
                    output.WriteLine($"== checks on {state.Name} (time: the body and a synchronize, CPU reference included) ==");
                    StageResult result;
                    outcomes = options.InProcess
                        ? CheckStage.RunInProcess([.. selection.SelectMany(s => s.Checks)], () => state.Device ?? throw new InvalidOperationException("the device is closed"), _ => { }, d, output, out result)
                        : CheckStage.RunInChildren(selection, options, d, output, out result);
                    return result;
                }, output);
            }
            IReadOnlyList<SanitizerRun> sanitizer = [];
            if (!options.RunsChecks) stages.Skip(Stages.Sanitizer, "--bench-only");
            else
            {
                stages.Run(Stages.Sanitizer, d =>
                {
                    output.WriteLine();
                    output.WriteLine($"== compute-sanitizer on {state.Name} ==");
                    string? tool = CudaToolLocator.FindSanitizer(Environment.GetEnvironmentVariable, AppContext.BaseDirectory, new RealFiles(), out string reason);
                    output.WriteLine(tool is null ? $"compute-sanitizer: not run: {reason}" : $"compute-sanitizer: {tool}");
                    if (tool is null) return StageResult.NotRun(reason);
                    sanitizer = SanitizerStage.Run(tool, options, d, output, out var result);
                    return result;
                }, output);
            }
            IReadOnlyList<BenchOutcome>? bench = null;
            if (!options.RunsBenchmarks) stages.Skip(Stages.Benchmarks, "--no-bench");
            else
            {
                stages.Run(Stages.Benchmarks, d =>
                {
                    bench = BenchStage.Run(options, state.Name, options.InProcess ? state.Device : null, d, output, out var result);
                    return result;
                }, output);
            }
            if (!options.RunsBenchmarks) stages.Skip(Stages.Peers, "--no-bench");
            else
            {
                stages.Run(Stages.Peers, d => PeersStage.RunAfter(bench, state.Name, options.BenchSizes, dryRun: false, d, output), output);
            }
            var summary = new RunSummary(state.Name, outcomes, catalogCount, options.Filter, state.Compiled);
            int exit = GpuCheckMain.WriteEnd(output, options,
                new GpuCheckMain.RunResults(summary, bench, sanitizer, stages, Reports.CompiledColumn(state.Sources, state.Reports)));
            state.CloseQuietly(output);
            return state.CloseFailed ? 1 : exit;
        }
        finally
        {
            state.CloseQuietly(output);
        }
    }

    /// <summary>What the first stage found, for the others.</summary>
    /// <summary>
    /// Runs the GELU-epilogue probes (<see cref="GeluEpilogueProbe"/>, then the library's DGELU one) on the opened device,
    /// sets its <see cref="IBlas.GeluEpilogueIsGeluNew"/> and <see cref="IBlas.DGeluEpilogueIsGeluNew"/> to the verdicts
    /// (the benchmarks in this process then time the paths the engine would take) and records the verdicts in the run's
    /// output. A probe that throws leaves its fallback in place.
    /// </summary>
    private static void RecordGeluEpilogueProbe(State state, TextWriter output)
    {
        try
        {
            var verdict = GeluEpilogueProbe.Apply(state.Device!);
            output.WriteLine($"GELU epilogue probe (cuBLASLt GELU_AUX_BIAS vs the CPU's gelu_new, bf16): {verdict.Comparison}; " +
                             (verdict.IsGeluNew ? "LinearGelu takes the epilogue on this GPU" : "LinearGelu keeps the BIAS epilogue + gelu_new on this GPU"));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            output.WriteLine($"GELU epilogue probe could not run ({e.GetType().Name}: {e.Message}); LinearGelu keeps the BIAS epilogue + gelu_new");
        }
        try
        {
            var (bf16, fp32) = Phi2Native.Backends.Ops.Mlp.DGeluEpilogueProbe.Apply(state.Device!);
            output.WriteLine($"DGELU epilogue probe (cuBLASLt DGELU vs (P + beta C) gelu_new'(aux)): bf16 {bf16}; fp32 {fp32}; " +
                             (state.Device!.Blas.DGeluEpilogueIsGeluNew ? "fc2's dx product takes fc1's gelu backward on this GPU" : "fc1 keeps bias_gelu_new_backward on this GPU"));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            state.Device!.Blas.DGeluEpilogueIsGeluNew = false;
            output.WriteLine($"DGELU epilogue probe could not run ({e.GetType().Name}: {e.Message}); fc1 keeps bias_gelu_new_backward");
        }
    }

    private sealed class State
    {
        public bool NoGpu;
        public bool Opened;
        public bool CloseFailed;
        public IDeviceApi? Device;
        public string Name = "?";
        public KernelSourceCatalog? Sources;
        public IReadOnlyList<KernelCompileReport>? Reports;
        public bool Compiled = true;

        /// <summary>Closes the device if it is open; a failure is reported and fails the run (<see cref="CloseFailed"/>).</summary>
        public void CloseQuietly(TextWriter output)
        {
            if (Device is null) return;
            var device = Device;
            Device = null;
            try
            {
                device.Dispose();
            }
            catch (Exception e)
            {
                CloseFailed = true;
                output.WriteLine($"error: closing {Name} failed: {e.GetType().Name}: {e.Message}");
            }
        }
    }

    private static StageResult ProbeAndCompile(RunnerOptions options, State state, Deadline deadline, TextWriter output)
    {
        var probe = CudaAvailability.Probe();
        output.WriteLine(probe.Summary);
        output.WriteLine(CudaAvailability.DescribeLibraries());
        if (!probe.IsAvailable)
        {
            state.NoGpu = true;
            output.WriteLine($"no GPU: {probe.Reason}");
            return StageResult.NotRun("no GPU");
        }
        ShareTheKernelCache(output);
        state.Device = GpuDevices.TryOpen(out string reason);
        if (state.Device is null)
        {
            output.WriteLine($"error: CUDA sees {probe.Devices.Count} device(s), but the first could not be opened: {reason}");
            return new StageResult(1, 1, 1, "the device could not be opened");
        }
        state.Opened = true;
        state.Name = state.Device.Name;
        state.Sources = Reports.LoadKernelSources(out string sourcesText);
        output.WriteLine($"device: {state.Name}; kernel sources: {sourcesText}");
        RecordGeluEpilogueProbe(state, output);
        if (!options.RunsChecks) return new StageResult(0, 0, 0, "probe only (--bench-only: no NVRTC table)");
        output.WriteLine();
        output.WriteLine($"== NVRTC: every kernel file for {state.Name} (fills the kernel cache the children read) ==");
        var watch = System.Diagnostics.Stopwatch.StartNew();
        IReadOnlyList<string> files = state.Device is CudaDevice cuda ? cuda.KernelFiles : [];
        try
        {
            var reports = GpuDevices.CompileAllKernels(state.Device, () => deadline.IsPast);
            var notRun = files.Skip(reports.Count).ToList();
            Reports.WriteCompileTable(output, reports, options.Markdown, notRun);
            state.Reports = reports;
            // A file the budget left out is not a failure: the checks compile what they launch when they launch it.
            state.Compiled = files.Count > 0 && reports.All(r => r.Compiled);
            int compiled = reports.Count(r => r.Compiled);
            string note = files.Count == 0 ? "no kernel files to compile"
                : $"{compiled} of {files.Count} kernel files compiled in {Format.Seconds(watch.Elapsed.TotalSeconds)} s" +
                  (notRun.Count > 0 ? $"; {notRun.Count} not run: {deadline.Why}" : "");
            output.WriteLine(files.Count == 0 ? "error: no kernel files to compile" : note);
            if (state.Device is CudaDevice device) PrintResources(device.Info.Architecture, deadline, options.Markdown, output);
            return new StageResult(files.Count, reports.Count, reports.Count - compiled + (files.Count == 0 ? 1 : 0), note);
        }
        catch (Exception e)
        {
            // Go on to the checks all the same: a short GPU session should show everything it can.
            state.Compiled = false;
            output.WriteLine($"error: the kernels could not be compiled: {e.GetType().Name}: {e.Message}");
            return new StageResult(files.Count, 0, 1, $"the compile step threw {e.GetType().Name}");
        }
    }

    /// <summary>
    /// The kernel resource table (registers, spills, occupancy, tensor-core instructions) from this machine's NVRTC, as
    /// CI prints it from NVRTC 12.5 (kernels/resources.tsv), when the stage has the time for a second compile with
    /// ptxas's report. Informational: what differs from CI's table is for the RESULTS entry, not a failure.
    /// </summary>
    private static void PrintResources(string architecture, Deadline deadline, bool markdown, TextWriter output)
    {
        output.WriteLine();
        output.WriteLine($"== kernel resources from this machine's NVRTC, {architecture} (CI's: kernels/resources.tsv) ==");
        if (deadline.Remaining < ResourcesTime)
        {
            output.WriteLine($"not run: {Deadline.Seconds(deadline.Remaining)} s of the stage left, {Deadline.Seconds(ResourcesTime)} s wanted");
            return;
        }
        try
        {
            KernelResources.Run([GpuArchitecture.Named(architecture)], tablePath: null, write: false, markdown, output);
        }
        catch (Exception e)
        {
            output.WriteLine($"not run: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>What the resource table needs of the stage: every file compiled once more (NVRTC 12.5 takes ~10 s on 2 cores).</summary>
    private static readonly TimeSpan ResourcesTime = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The children read the kernel images this stage compiles from the disk cache. Where the environment gives it no
    /// folder (no HOME, no XDG_CACHE_HOME) each child would compile every file it uses again, so the run names one in
    /// the temporary folder, for itself and its children. A cache turned off on purpose stays off.
    /// </summary>
    private static void ShareTheKernelCache(TextWriter output)
    {
        if (Environment.GetEnvironmentVariable(KernelCacheOptions.EnvironmentVariable) is { Length: > 0 }) return;
        if (KernelCacheOptions.FromEnvironment().Directory is not null) return;
        string folder = Path.Combine(Path.GetTempPath(), "phi2native-kernels");
        Environment.SetEnvironmentVariable(KernelCacheOptions.EnvironmentVariable, folder);
        output.WriteLine($"kernel cache: {folder} (the environment names none; the children share it)");
    }
}
