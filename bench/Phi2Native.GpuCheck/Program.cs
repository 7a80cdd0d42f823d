// Phi2Native GPU check runner: what bench/gpu-check.sh runs on a machine with a GPU (see the top of that script;
// RunnerOptions.Usage says what it does and how it is called). On a GPU it runs the stages of Stages.cs within
// their budgets: probe and NVRTC, the device checks (a child process of this program per family, so a kernel fault
// costs one check), compute-sanitizer, the benchmarks (in a child), the peer scripts; it prints the tables last.
// --emulated runs the checks (and, with --bench-tiny, the benchmarks) on the kernel emulator the same way, which
// is how CI proves the published runner works on a machine without a GPU.
using System.Reflection;
using System.Runtime.InteropServices;
using Phi2Native.Cuda.Resources;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>The runner's flow: options, then a child's share, the self-test, the list, or a run on the GPU or the emulator.</summary>
internal static class GpuCheckMain
{
    /// <summary>The entry point. Not top-level statements: their global Program class would clash, in the tests that
    /// see this assembly's internals, with the CLI's Program.</summary>
    public static int Main(string[] args) => Run(args, Console.Out);

    /// <summary>Runs the command line; returns the exit code (see <see cref="RunnerOptions.Usage"/>). Never throws.</summary>
    public static int Run(string[] args, TextWriter output)
    {
        RunnerOptions options;
        try
        {
            options = RunnerOptions.Parse(args);
            if (options.ChildChecks is not null) ChildMain.SelectChecks(options.ChildChecks, options.Filter); // names checked here, not mid-run
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
        if (options.ChildChecks is not null) return ChildMain.RunChecks(options, output);
        if (options.ChildBench) return ChildMain.RunBenchmarks(options, output);
        if (options.SelfTest) return SelfTest.Run(output);
        if (options.Resources)
            return KernelResources.Run(options.Architectures?.Select(GpuArchitecture.Named).ToList() ?? GpuArchitecture.Compiled,
                options.TablePath, options.WriteTable, options.Markdown, output);
        var selection = CheckStage.Select(options.Filter);
        int catalogCount = DeviceCheckCatalog.All.Count;
        if (selection.Count == 0 && options.RunsChecks)
        {
            output.WriteLine($"error: --filter '{options.Filter}' matches none of the {catalogCount} checks (--list prints them)");
            return 1;
        }
        if (options.List)
        {
            foreach (var (family, checks) in selection)
            {
                output.WriteLine($"family {family.Name} ({checks.Count} of {family.Checks.Count} checks):");
                foreach (var check in checks) output.WriteLine($"  {check.Name}  [{string.Join(", ", check.Kernels)}]");
            }
            output.WriteLine($"{selection.Sum(s => s.Checks.Count)} of the catalog's {catalogCount} checks, in {selection.Count} families; " +
                             $"compute-sanitizer runs {string.Join(", ", SanitizerStage.Families)}");
            output.WriteLine($"benchmarks ({(options.RunsBenchmarks ? options.BenchSizes.Label + " sizes" : "not run with these options")}): " +
                             string.Join("; ", Benchmarks.CaseNames));
            output.WriteLine($"stages: {string.Join(", ", Stages.All.Select(s => $"{s.Name} {Deadline.Seconds(s.Budget)} s"))}");
            return 0;
        }
        output.WriteLine(Header());
        return options.Emulated ? EmulatedRun.Run(options, selection, catalogCount, output) : GpuRun.Run(options, selection, catalogCount, output);
    }

    /// <summary>What a result in bench/RESULTS.md needs besides the table: runner build (with its commit), runtime, date, host.</summary>
    private static string Header()
    {
        var assembly = typeof(GpuCheckMain).Assembly;
        string version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
        return $"Phi2Native GPU check: runner {version}, .NET {Environment.Version} ({RuntimeInformation.RuntimeIdentifier}), " +
               $"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, host {Environment.MachineName}";
    }

    /// <summary>What a run produced, for <see cref="WriteEnd"/>.</summary>
    internal sealed record RunResults(RunSummary Summary, IReadOnlyList<BenchOutcome>? Bench, IReadOnlyList<SanitizerRun> Sanitizer,
        StageRunner Stages, Func<DeviceCheck, string> CompiledColumn);

    /// <summary>
    /// The tables (checks, compute-sanitizer, benchmarks, stages) and the last lines; returns the exit code. The last
    /// line is the checks' (what CI parses), or the benchmarks' with --bench-only.
    /// </summary>
    internal static int WriteEnd(TextWriter output, RunnerOptions options, RunResults results)
    {
        var summary = results.Summary;
        output.WriteLine();
        output.WriteLine("== summary ==");
        if (options.RunsChecks)
        {
            Reports.WriteCheckTable(output, summary.Outcomes, results.CompiledColumn, options.Markdown);
            output.WriteLine();
        }
        if (results.Sanitizer.Count > 0)
        {
            SanitizerStage.WriteTable(output, results.Sanitizer, options.Markdown);
            output.WriteLine();
        }
        if (results.Bench is { } bench)
        {
            Benchmarks.WriteTable(output, bench, options.Markdown);
            output.WriteLine();
        }
        results.Stages.WriteTable(output, options.Markdown);
        output.WriteLine();
        if (results.Bench is not null) output.WriteLine(Benchmarks.Line(results.Bench, summary.DeviceName, options.BenchSizes));
        if (options.RunsChecks) output.WriteLine(summary.LastLine);
        int exit = Benchmarks.ExitCode(options.RunsChecks ? summary : null, results.Bench);
        return results.Stages.AnyFailed ? 1 : exit;
    }
}
