using System.Globalization;
using System.Text.RegularExpressions;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>One compute-sanitizer tool's run over the chosen families.</summary>
/// <param name="Tool">memcheck or racecheck.</param>
/// <param name="Families">The families it ran, comma-separated.</param>
/// <param name="Outcomes">The checks' outcomes under the tool.</param>
/// <param name="Errors">The errors its "ERROR SUMMARY" lines add up to.</param>
/// <param name="Summaries">How many children printed an "ERROR SUMMARY" (one killed before it did not).</param>
/// <param name="Children">Children started.</param>
/// <param name="Seconds">Wall time.</param>
internal sealed record SanitizerRun(string Tool, string Families, IReadOnlyList<CheckOutcome> Outcomes, int Errors, int Summaries, int Children, double Seconds)
{
    /// <summary>Failed: the tool reported an error, or a check failed or threw under it.</summary>
    public bool Failed => Errors > 0 || Outcomes.Any(o => o.Status is CheckStatus.Failed or CheckStatus.Threw);

    /// <summary>Checks that ran.</summary>
    public int Ran => Outcomes.Count(o => o.Status != CheckStatus.NotRun);
}

/// <summary>
/// compute-sanitizer's memcheck (out-of-bounds and misaligned accesses) and racecheck (shared-memory hazards) over the
/// families whose kernels use shared memory with __syncthreads or warp shuffles: what the emulator cannot see, as it
/// runs a block's threads one after another. Each tool runs the families in children as the checks stage does
/// (compute-sanitizer [options] runner --child-checks FAMILIES ...), with half the stage's time left each.
/// </summary>
internal static class SanitizerStage
{
    /// <summary>
    /// The families sanitized, most telling first (a cut-off takes the tail): attention and cached-attention (tiles in
    /// shared memory, cp.async, xor shuffles, __syncthreads between phases), layernorm and reduction (block_reduce: shuffles, a 32-float
    /// scratch), cross-entropy (shared row statistics), transpose (a shared tile), mma (tensor-core fragments staged
    /// in shared memory), rotary and embedding (shared tables with __syncthreads). Elementwise, cast, AdamW, gelu,
    /// dropout and cache kernels share nothing between threads; cuBLAS is NVIDIA's to sanitize.
    /// </summary>
    public static IReadOnlyList<string> Families { get; } = ["attention", "cached-attention", "layernorm", "reduction", "cross-entropy", "transpose", "mma", "rotary", "embedding"];

    /// <summary>The tools, in order.</summary>
    public static IReadOnlyList<string> Tools { get; } = ["memcheck", "racecheck"];

    /// <summary>
    /// compute-sanitizer's options besides the tool: a short print limit; API error returns not reported (the engine
    /// tries some calls that may fail, e.g. an optional symbol or an opt-in attribute, and its checks see real
    /// API errors as exceptions), so the summary counts the device-side errors this stage is for.
    /// </summary>
    public static IReadOnlyList<string> Options { get; } = ["--print-limit", "10", "--report-api-errors", "no"];

    private static readonly Regex s_summary = new(@"ERROR SUMMARY:\s*(\d+)\s+error", RegexOptions.CultureInvariant);

    /// <summary>The errors an "========= ERROR SUMMARY: N errors" line reports, or null for any other line.</summary>
    public static int? ErrorSummary(string line)
    {
        var m = s_summary.Match(line);
        return m.Success ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;
    }

    /// <summary>Runs each tool in turn over the families' checks that --filter selects; returns a run per tool that started.</summary>
    public static IReadOnlyList<SanitizerRun> Run(string sanitizer, RunnerOptions options, Deadline deadline, TextWriter output, out StageResult result)
    {
        var families = CheckStage.Select(options.Filter).Where(s => Families.Contains(s.Family.Name)).ToList();
        var checks = families.SelectMany(s => s.Checks).ToList();
        string names = string.Join(",", families.Select(s => s.Family.Name));
        var runs = new List<SanitizerRun>();
        if (checks.Count == 0)
        {
            result = StageResult.NotRun($"--filter '{options.Filter}' selects none of the sanitized families' checks");
            return runs;
        }
        for (int t = 0; t < Tools.Count; t++)
        {
            string tool = Tools[t];
            // This tool's share: an equal part of what is left for the tools not yet run.
            var share = deadline.Remaining / (Tools.Count - t);
            var toolDeadline = new Deadline(deadline.Clock, deadline.Clock.Elapsed + share,
                $"{tool}'s share of the stage ({Deadline.Seconds(share)} s) was spent");
            if (toolDeadline.Remaining <= CheckStage.Grace + ChildSupervisor.MinimumChildTime)
            {
                output.WriteLine($"{tool}: not run ({deadline.Why})");
                continue;
            }
            output.WriteLine();
            output.WriteLine($"-- {tool} over {names} ({checks.Count} checks; {Deadline.Seconds(share)} s) --");
            var watch = System.Diagnostics.Stopwatch.StartNew();
            int errors = 0, summaries = 0;
            var progress = new ConsoleProgress<CheckOutcome>(output, checks.Count, CheckRunner.Progress);
            ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
            {
                var command = ChildCommand.Self(CheckStage.ChildArguments(names, options, from, limit)).Under(sanitizer, ["--tool", tool, .. Options]);
                return ChildProcess.Run(command, killAfter, line =>
                {
                    if (ErrorSummary(line) is int n)
                    {
                        errors += n;
                        summaries++;
                    }
                    stdout(line);
                }, stderr);
            };
            var outcomes = SupervisedCases.Run([.. checks.Select(c => c.Name)], launch, toolDeadline, CheckStage.Grace, null,
                (i, r) => r.ToCheck(checks[i]), progress, out int children);
            var run = new SanitizerRun(tool, names, outcomes, errors, summaries, children, watch.Elapsed.TotalSeconds);
            runs.Add(run);
            output.WriteLine($"{tool}: {errors} error(s) in {summaries} of {children} sanitizer run(s); {run.Ran} of {checks.Count} checks ran");
        }
        result = new StageResult(Tools.Count, runs.Count, runs.Count(r => r.Failed),
            string.Join("; ", runs.Select(r => $"{r.Tool}: {r.Errors} error(s), {r.Ran}/{r.Outcomes.Count} checks")));
        return runs;
    }

    /// <summary>The sanitizer table: tool, checks ran of all, errors, seconds, result; then each check that did not pass under it.</summary>
    public static void WriteTable(TextWriter output, IReadOnlyList<SanitizerRun> runs, bool markdown)
    {
        var table = new TextTable("tool", "families", "checks", "errors", "seconds", "result");
        foreach (var r in runs)
        {
            string result = r.Failed ? "FAIL" : r.Ran < r.Outcomes.Count ? "CUT OFF" : "pass";
            table.Add(r.Tool, r.Families, $"{r.Ran}/{r.Outcomes.Count}", r.Errors.ToString(CultureInfo.InvariantCulture),
                Format.Seconds(r.Seconds), result);
        }
        table.Write(output, markdown);
        foreach (var r in runs)
            foreach (var o in r.Outcomes.Where(o => o.Status is CheckStatus.Failed or CheckStatus.Threw))
                output.WriteLine($"{r.Tool}: {CheckRunner.Describe(o.Status)} {o.Check.Name}: {o.Detail}");
    }

    /// <summary>Every sanitized family exists in the catalog (the self-test checks it, so a rename cannot drop one silently).</summary>
    public static IEnumerable<string> UnknownFamilies() => Families.Except(DeviceCheckCatalog.Families.Select(f => f.Name));
}
