using System.Globalization;
using Phi2Native.Cuda;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>Number formats shared by the tables: invariant culture, short.</summary>
internal static class Format
{
    /// <summary>Milliseconds with three decimals below 10 ms, one above.</summary>
    public static string Milliseconds(TimeSpan time) =>
        time.TotalMilliseconds.ToString(time.TotalMilliseconds < 10 ? "0.000" : "0.0", CultureInfo.InvariantCulture);

    /// <summary>Seconds with two decimals.</summary>
    public static string Seconds(double seconds) => seconds.ToString("0.00", CultureInfo.InvariantCulture);

    /// <summary>Three significant digits; "inf" where a NaN or infinity disagreed.</summary>
    public static string Number(double value) =>
        double.IsPositiveInfinity(value) ? "inf" : value.ToString("G3", CultureInfo.InvariantCulture);
}

/// <summary>
/// The outcome of a whole run and the exit code it earns: 0 only when the kernels compiled and every selected
/// check ran and passed, and, without --filter, when the run covered exactly the catalog the emulated tests run.
/// </summary>
/// <param name="DeviceName">The device the checks ran on.</param>
/// <param name="Outcomes">One per selected check, in catalog order.</param>
/// <param name="CatalogCount">How many checks <see cref="DeviceCheckCatalog.All"/> has (what NUnit runs on the emulator).</param>
/// <param name="Filter">The --filter text, or null.</param>
/// <param name="KernelsCompiled">False when NVRTC failed on a kernel file or the compile step could not run.</param>
internal sealed record RunSummary(string DeviceName, IReadOnlyList<CheckOutcome> Outcomes, int CatalogCount, string? Filter, bool KernelsCompiled)
{
    /// <summary>Checks that passed.</summary>
    public int Passed => Outcomes.Count(o => o.Status == CheckStatus.Passed);

    /// <summary>Checks that started (passed, failed or threw).</summary>
    public int Ran => Outcomes.Count(o => o.Status != CheckStatus.NotRun);

    /// <summary>0 when everything asked for passed, else 1.</summary>
    public int ExitCode =>
        KernelsCompiled && Passed == Outcomes.Count && (Filter is not null || Outcomes.Count == CatalogCount) ? 0 : 1;

    /// <summary>The run's last line: "N of N checks passed on DEVICE; the emulated catalog has N checks", and what else went wrong.</summary>
    public string LastLine
    {
        get
        {
            string line = $"{Passed} of {Ran} checks passed on {DeviceName}; the emulated catalog has {CatalogCount} checks";
            if (Filter is not null) line += $"; --filter '{Filter}' selected {Outcomes.Count}";
            int notRun = Outcomes.Count - Ran;
            if (notRun > 0) line += $"; {notRun} not run";
            if (!KernelsCompiled) line += "; NOT every kernel compiled";
            return line;
        }
    }
}

/// <summary>The runner's tables.</summary>
internal static class Reports
{
    /// <summary>
    /// The NVRTC table (kernel file, compiled, from cache, seconds), with a NOT RUN row for each file in
    /// <paramref name="notRun"/> (the stage's budget was spent first), then the log of each file that has one.
    /// </summary>
    public static void WriteCompileTable(TextWriter output, IReadOnlyList<KernelCompileReport> reports, bool markdown, IReadOnlyList<string>? notRun = null)
    {
        var table = new TextTable("kernel file", "compiled", "from cache", "seconds");
        foreach (var r in reports) table.Add(r.File, r.Compiled ? "yes" : "NO", r.FromCache ? "yes" : "no", Format.Seconds(r.Seconds));
        foreach (string file in notRun ?? []) table.Add(file, "NOT RUN", "-", "-");
        table.Write(output, markdown);
        foreach (var r in reports.Where(r => !string.IsNullOrWhiteSpace(r.Log)))
        {
            output.WriteLine();
            output.WriteLine($"NVRTC log for {r.File}{(r.Compiled ? " (warnings)" : "")}:");
            output.WriteLine(r.Log!.TrimEnd());
        }
    }

    /// <summary>
    /// The final table: check, kernels, compiled, max |error|, worst/tolerance, time, result; then the detail of each
    /// check that did not pass, so the table stays narrow.
    /// </summary>
    /// <param name="compiled">The "compiled" cell of a check (see <see cref="CompiledColumn"/>).</param>
    public static void WriteCheckTable(TextWriter output, IReadOnlyList<CheckOutcome> outcomes, Func<DeviceCheck, string> compiled, bool markdown)
    {
        var table = new TextTable("check", "kernels", "compiled", "max |error|", "worst/tol", "time ms", "result");
        foreach (var o in outcomes)
        {
            table.Add(o.Check.Name, string.Join(",", o.Check.Kernels), compiled(o.Check),
                o.Result is null ? "-" : Format.Number(o.Result.MaxAbsoluteError),
                o.Result is null ? "-" : Format.Number(o.Result.WorstRatio),
                o.Status == CheckStatus.NotRun ? "-" : Format.Milliseconds(o.Time),
                CheckRunner.Describe(o.Status));
        }
        table.Write(output, markdown);
        var failed = outcomes.Where(o => o.Status != CheckStatus.Passed).ToList();
        if (failed.Count == 0) return;
        output.WriteLine();
        foreach (var o in failed) output.WriteLine($"{CheckRunner.Describe(o.Status)} {o.Check.Name}: {o.Detail}");
    }

    /// <summary>
    /// The "compiled" cell on a GPU: "yes" when every kernel file the check's kernels live in compiled, "NO" when one
    /// did not, "n/a" when none of its kernels is an NVRTC kernel (cuBLAS calls only), "?" when that cannot be told
    /// (the compile step failed, or the kernel sources could not be read).
    /// </summary>
    /// <param name="sources">The kernel sources, which map each entry point to its file (the map launches use).</param>
    /// <param name="reports">NVRTC's reports, or null when the compile step failed.</param>
    public static Func<DeviceCheck, string> CompiledColumn(KernelSourceCatalog? sources, IReadOnlyList<KernelCompileReport>? reports)
    {
        var byFile = (reports ?? []).GroupBy(r => r.File, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.All(r => r.Compiled), StringComparer.Ordinal);
        return check =>
        {
            if (sources is null || reports is null) return "?";
            var files = check.Kernels.Select(k => sources.KernelFiles.GetValueOrDefault(k)).OfType<string>().Distinct().ToList();
            if (files.Count == 0) return "n/a";
            if (files.Any(f => byFile.TryGetValue(f, out bool compiled) && !compiled)) return "NO";
            return files.All(byFile.ContainsKey) ? "yes" : "?";
        };
    }

    /// <summary>The kernel sources embedded in Phi2Native, or null with <paramref name="description"/> saying why; never throws.</summary>
    public static KernelSourceCatalog? LoadKernelSources(out string description)
    {
        try
        {
            var sources = KernelSourceCatalog.Embedded;
            description = $"{sources.Files.Count} kernel files embedded in Phi2Native ({sources.KernelFiles.Count} entry points)";
            return sources;
        }
        catch (Exception e)
        {
            description = $"the embedded kernel sources could not be read: {e.GetType().Name}: {e.Message}";
            return null;
        }
    }
}
