// Phi2Native GPU check runner: what bench/gpu-check.sh runs on a machine with a GPU (see the top of that script).
//
//   bench/gpu-runner/Phi2Native.GpuCheck [--emulated] [--filter TEXT] [--list] [--markdown] [--time-limit S]
//                                        [--no-bench | --bench-only] [--bench-tiny]
//
// On a GPU it NVRTC-compiles every kernel file, runs every device check of tests/Phi2Native.DeviceChecks against
// its CPU reference, then the benchmarks (Benchmarks.cs: Phi-2-sized ops and model steps, device-event timing) and
// prints the tables last; without one it says why and exits 0. --emulated runs the same checks on the kernel
// emulator, which is how CI proves the published runner works on a machine without a GPU; --emulated --bench-tiny
// runs the benchmark code on it too, at tiny sizes.
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Phi2Native.Cuda;
using Phi2Native.DeviceChecks;
using Phi2Native.GpuCheck;

return GpuCheckMain.Run(args, Console.Out);

namespace Phi2Native.GpuCheck
{
    /// <summary>The runner's flow: options, header, then the GPU or the emulator, then the tables and the last line.</summary>
    internal static class GpuCheckMain
    {
        /// <summary>Runs the command line; returns the exit code (see <see cref="RunnerOptions.Usage"/>). Never throws.</summary>
        public static int Run(string[] args, TextWriter output)
        {
            RunnerOptions options;
            try
            {
                options = RunnerOptions.Parse(args);
            }
            catch (ArgumentException e)
            {
                output.WriteLine($"error: {e.Message}\n\n{RunnerOptions.Usage}");
                return 2;
            }
            if (options.Help)
            {
                output.WriteLine(RunnerOptions.Usage);
                return 0;
            }
            try
            {
                return Execute(options, output);
            }
            catch (Exception e)
            {
                // A failure of the runner itself (checks are caught one by one): one clear message, not a crash.
                output.WriteLine($"error: the runner failed: {e}");
                return 1;
            }
        }

        private static int Execute(RunnerOptions options, TextWriter output)
        {
            if (options.SelfTest) return SelfTest.Run(output);
            var catalog = DeviceCheckCatalog.All;
            var selected = options.Filter is null
                ? catalog
                : catalog.Where(c => c.Name.Contains(options.Filter, StringComparison.OrdinalIgnoreCase)).ToList();
            if (selected.Count == 0 && options.RunsChecks)
            {
                output.WriteLine($"error: --filter '{options.Filter}' matches none of the {catalog.Count} checks (--list prints them)");
                return 1;
            }
            if (options.List)
            {
                foreach (var check in selected) output.WriteLine($"{check.Name}  [{string.Join(", ", check.Kernels)}]");
                output.WriteLine($"{selected.Count} of the catalog's {catalog.Count} checks");
                output.WriteLine($"benchmarks ({(options.RunsBenchmarks ? options.BenchSizes.Label + " sizes" : "not run with these options")}): " +
                                 string.Join("; ", Benchmarks.CaseNames));
                return 0;
            }
            output.WriteLine(Header());
            return options.Emulated ? RunEmulated(options, selected, catalog.Count, output) : RunOnGpu(options, selected, catalog.Count, output);
        }

        /// <summary>What a result in bench/RESULTS.md needs besides the table: runner build (with its commit), runtime, date, host.</summary>
        private static string Header()
        {
            var assembly = typeof(GpuCheckMain).Assembly;
            string version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
            return $"Phi2Native GPU check: runner {version}, .NET {Environment.Version} ({RuntimeInformation.RuntimeIdentifier}), " +
                   $"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, host {Environment.MachineName}";
        }

        private static int RunOnGpu(RunnerOptions options, IReadOnlyList<DeviceCheck> selected, int catalogCount, TextWriter output)
        {
            var clock = Stopwatch.StartNew();
            var probe = CudaAvailability.Probe();
            output.WriteLine(probe.Summary);
            output.WriteLine(CudaAvailability.DescribeLibraries());
            if (!probe.IsAvailable)
            {
                // Not a failure: the same script runs wherever the runner was carried, GPU or not.
                output.WriteLine($"no GPU: {probe.Reason}");
                return 0;
            }
            var device = GpuDevices.TryOpen(out string reason);
            if (device is null)
            {
                output.WriteLine($"error: CUDA sees {probe.Devices.Count} device(s), but the first could not be opened: {reason}");
                return 1;
            }
            string name = device.Name;
            var sources = Reports.LoadKernelSources(out string sourcesText);
            IReadOnlyList<KernelCompileReport>? reports = null;
            IReadOnlyList<CheckOutcome> outcomes = [];
            IReadOnlyList<BenchOutcome>? bench = null;
            bool compiled = true, closed;
            try
            {
                output.WriteLine($"device: {name}; kernel sources: {sourcesText}");
                if (options.RunsChecks)
                {
                    output.WriteLine();
                    output.WriteLine($"== NVRTC: every kernel file for {name} ==");
                    reports = CompileKernels(device, options.Markdown, output, out compiled);
                    output.WriteLine();
                    output.WriteLine($"== checks on {name} (time: the body and a synchronize, CPU reference included) ==");
                    outcomes = CheckRunner.RunAll(selected, () => device, _ => { }, options.TimeLimit - clock.Elapsed, output);
                }
                if (options.RunsBenchmarks) bench = RunBenchmarks(options, device, clock, output);
            }
            finally
            {
                closed = CloseQuietly(device, output);
            }
            int exit = WriteEnd(output, options, new RunSummary(name, outcomes, catalogCount, options.Filter, compiled), bench,
                Reports.CompiledColumn(sources, reports));
            return closed ? exit : 1;
        }

        /// <summary>The benchmark stage on <paramref name="device"/>, bounded by what is left of --time-limit.</summary>
        private static IReadOnlyList<BenchOutcome> RunBenchmarks(RunnerOptions options, IDeviceApi device, Stopwatch clock, TextWriter output)
        {
            var sizes = options.BenchSizes;
            output.WriteLine();
            output.WriteLine($"== benchmarks on {device.Name} at {sizes.Label} sizes (device-event time, median of up to {sizes.Reps} after " +
                             $"{Benchmarks.WarmUp} warm-up, {Benchmarks.PerCase.TotalSeconds:0} s a case; cases start for {Benchmarks.StageLimit.TotalSeconds:0} s at most, " +
                             $"{Format.Seconds(Math.Max(0, (options.TimeLimit - clock.Elapsed).TotalSeconds))} s of the time limit left) ==");
            return Benchmarks.RunAll(device, sizes, clock, options.TimeLimit, output);
        }

        private static IReadOnlyList<KernelCompileReport>? CompileKernels(IDeviceApi device, bool markdown, TextWriter output, out bool allCompiled)
        {
            var watch = Stopwatch.StartNew();
            try
            {
                var reports = GpuDevices.CompileAllKernels(device);
                Reports.WriteCompileTable(output, reports, markdown);
                allCompiled = reports.Count > 0 && reports.All(r => r.Compiled);
                output.WriteLine(reports.Count == 0
                    ? "error: no kernel files to compile"
                    : $"{reports.Count(r => r.Compiled)} of {reports.Count} kernel files compiled in {Format.Seconds(watch.Elapsed.TotalSeconds)} s");
                return reports;
            }
            catch (Exception e)
            {
                // Go on to the checks all the same: a short GPU session should show everything it can.
                allCompiled = false;
                output.WriteLine($"error: the kernels could not be compiled: {e.GetType().Name}: {e.Message}");
                return null;
            }
        }

        private static bool CloseQuietly(IDeviceApi device, TextWriter output)
        {
            try
            {
                device.Dispose();
                return true;
            }
            catch (Exception e)
            {
                output.WriteLine($"error: closing {device.Name} failed: {e.GetType().Name}: {e.Message}");
                return false;
            }
        }

        private static int RunEmulated(RunnerOptions options, IReadOnlyList<DeviceCheck> selected, int catalogCount, TextWriter output)
        {
            var clock = Stopwatch.StartNew();
            // Probed anyway: it shows what the GPU path would say on this machine.
            output.WriteLine(CudaAvailability.Probe().Summary);
            var emulator = NativeLibraryResolver.Load(NativeLibraryResolver.Emulator);
            if (emulator.Handle == 0)
            {
                output.WriteLine($"error: the kernel emulator did not load: {emulator.Failure}");
                return 1;
            }
            string name;
            using (var probe = new EmulatedDevice()) name = probe.Name;
            output.WriteLine($"device: {name}, from {emulator.LoadedFrom} (kernels compiled by g++ at build time, no NVRTC)");
            Reports.LoadKernelSources(out string sourcesText);
            output.WriteLine($"kernel sources: {sourcesText}");
            IReadOnlyList<CheckOutcome> outcomes = [];
            if (options.RunsChecks)
            {
                output.WriteLine();
                output.WriteLine($"== checks on {name}, a fresh device each (time: host time, nothing about a GPU) ==");
                // A fresh device per check, as the NUnit fixture makes one: a check cannot inherit another's state.
                outcomes = CheckRunner.RunAll(selected, () => new EmulatedDevice(), d => d.Dispose(), options.TimeLimit - clock.Elapsed, output);
            }
            IReadOnlyList<BenchOutcome>? bench = null;
            if (options.RunsBenchmarks)
            {
                // The same code paths as on a GPU, at tiny sizes; the times say nothing about a GPU.
                using var device = new EmulatedDevice();
                bench = RunBenchmarks(options, device, clock, output);
            }
            return WriteEnd(output, options, new RunSummary(name, outcomes, catalogCount, options.Filter, KernelsCompiled: true), bench, _ => "emu");
        }

        /// <summary>
        /// The tables (checks, then benchmarks) and the last line; returns the exit code. The last line is the checks'
        /// (what CI parses), or the benchmarks' with --bench-only.
        /// </summary>
        private static int WriteEnd(TextWriter output, RunnerOptions options, RunSummary summary, IReadOnlyList<BenchOutcome>? bench,
            Func<DeviceCheck, string> compiled)
        {
            output.WriteLine();
            output.WriteLine("== summary ==");
            if (options.RunsChecks)
            {
                Reports.WriteCheckTable(output, summary.Outcomes, compiled, options.Markdown);
                output.WriteLine();
            }
            string? benchLine = null;
            if (bench is not null)
            {
                Benchmarks.WriteTable(output, bench, options.Markdown);
                output.WriteLine();
                benchLine = Benchmarks.Line(bench, summary.DeviceName, options.BenchSizes);
            }
            if (benchLine is not null) output.WriteLine(benchLine);
            if (options.RunsChecks) output.WriteLine(summary.LastLine);
            return Benchmarks.ExitCode(options.RunsChecks ? summary : null, bench);
        }
    }
}
