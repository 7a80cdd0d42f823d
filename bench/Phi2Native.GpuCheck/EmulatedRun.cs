using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;

namespace Phi2Native.GpuCheck;

/// <summary>
/// A run on the kernel emulator (--emulated), through the same stages and children as on a GPU, which is how CI
/// proves the published runner's machinery: the checks (a fresh emulated device per check, as the NUnit fixture makes
/// one), and with --bench-tiny the benchmarks at tiny sizes. NVRTC, compute-sanitizer and the peers need a GPU.
/// </summary>
internal static class EmulatedRun
{
    /// <summary>Runs the stages; returns the exit code.</summary>
    public static int Run(RunnerOptions options, IReadOnlyList<FamilySelection> selection, int catalogCount, TextWriter output)
    {
        var stages = new StageRunner(new StopwatchClock(), options.TimeLimit);
        string name = "?";
        bool loaded = false;
        stages.Run(Stages.ProbeAndCompile, _ =>
        {
            // Probed anyway: it shows what the GPU path would say on this machine.
            output.WriteLine(CudaAvailability.Probe().Summary);
            var emulator = NativeLibraryResolver.Load(NativeLibraryResolver.Emulator);
            if (emulator.Handle == 0)
            {
                output.WriteLine($"error: the kernel emulator did not load: {emulator.Failure}");
                return new StageResult(1, 1, 1, "the emulator did not load");
            }
            using (var probe = new EmulatedDevice()) name = probe.Name;
            loaded = true;
            output.WriteLine($"device: {name}, from {emulator.LoadedFrom} (kernels compiled by g++ at build time, no NVRTC)");
            Reports.LoadKernelSources(out string sourcesText);
            output.WriteLine($"kernel sources: {sourcesText}");
            return new StageResult(0, 0, 0, "the emulator: nothing to compile");
        }, output);
        if (!loaded) return 1;

        IReadOnlyList<CheckOutcome> outcomes = [];
        if (!options.RunsChecks) stages.Skip(Stages.Checks, "--bench-only");
        else
        {
            stages.Run(Stages.Checks, d =>
            {
                output.WriteLine();
                output.WriteLine($"== checks on {name}, a fresh device each (time: host time, nothing about a GPU) ==");
                StageResult result;
                outcomes = options.InProcess
                    ? CheckStage.RunInProcess([.. selection.SelectMany(s => s.Checks)], () => new EmulatedDevice(), d => d.Dispose(), d, output, out result)
                    : CheckStage.RunInChildren(selection, options, d, output, out result);
                return result;
            }, output);
        }
        stages.Skip(Stages.Sanitizer, "the emulator: no GPU to sanitize");
        IReadOnlyList<BenchOutcome>? bench = null;
        if (!options.RunsBenchmarks) stages.Skip(Stages.Benchmarks, "on the emulator only with --bench-tiny");
        else
        {
            stages.Run(Stages.Benchmarks, d =>
            {
                // The same code paths as on a GPU, at tiny sizes; the times say nothing about a GPU.
                using var inProcess = options.InProcess ? new EmulatedDevice() : null;
                bench = BenchStage.Run(options, name, inProcess, d, output, out var result);
                return result;
            }, output);
        }
        // On the emulator the peers run their CPU dry run at tiny sizes, with this run's figures: the wiring, not a comparison.
        if (bench is null) stages.Skip(Stages.Peers, "on the emulator only with the benchmarks (--bench-tiny)");
        else stages.Run(Stages.Peers, d => PeersStage.RunAfter(bench, name, options.BenchSizes, dryRun: true, d, output), output);
        var summary = new RunSummary(name, outcomes, catalogCount, options.Filter, KernelsCompiled: true);
        return GpuCheckMain.WriteEnd(output, options, new GpuCheckMain.RunResults(summary, bench, [], stages, _ => "emu"));
    }
}
