using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>The runner's command line, parsed by hand: the runner takes no dependencies beyond the check library.</summary>
internal sealed record RunnerOptions
{
    /// <summary>How long the whole run may start work for: the stage budgets' total less the runner's reserve (330 s),
    /// so it ends, tables printed, before bench/gpu-check.sh's outer timeout (the budgets' total, 340 s).</summary>
    public static readonly TimeSpan DefaultTimeLimit = Stages.Total - Stages.Reserve;

    /// <summary>Run on the kernel emulator instead of a GPU.</summary>
    public bool Emulated { get; init; }

    /// <summary>Run only the checks whose name contains this (ordinal, ignoring case); null runs all.</summary>
    public string? Filter { get; init; }

    /// <summary>Print the checks' names and kernels, run nothing.</summary>
    public bool List { get; init; }

    /// <summary>Print the tables as Markdown, ready for bench/RESULTS.md.</summary>
    public bool Markdown { get; init; }

    /// <summary>Check the runner's own bookkeeping on planted checks.</summary>
    public bool SelfTest { get; init; }

    /// <summary>Skip the benchmark stage (on a GPU it runs after the checks by default).</summary>
    public bool NoBench { get; init; }

    /// <summary>Run only the benchmark stage: no NVRTC table, no checks.</summary>
    public bool BenchOnly { get; init; }

    /// <summary>Run the benchmarks at tiny sizes (BenchSizes.Tiny); with --emulated this also turns the stage on.</summary>
    public bool BenchTiny { get; init; }

    /// <summary>Whether this run has a benchmark stage: on a GPU unless --no-bench; on the emulator only with --bench-tiny.</summary>
    public bool RunsBenchmarks => !NoBench && (BenchOnly || !Emulated || BenchTiny);

    /// <summary>The benchmarks' sizes: tiny on the emulator or with --bench-tiny, else Phi-2's.</summary>
    public BenchSizes BenchSizes => Emulated || BenchTiny ? BenchSizes.Tiny : BenchSizes.Phi2;

    /// <summary>Whether this run runs the checks.</summary>
    public bool RunsChecks => !BenchOnly;

    /// <summary>Run the checks and benchmarks in this process instead of a child per family (a sticky fault then ends them).</summary>
    public bool InProcess { get; init; }

    /// <summary>Hidden: be a child of the runner and run these check families (comma-separated), from <see cref="From"/> on.</summary>
    public string? ChildChecks { get; init; }

    /// <summary>Hidden: be a child of the runner and run the benchmark cases from <see cref="From"/> on.</summary>
    public bool ChildBench { get; init; }

    /// <summary>Hidden, with a child option: skip this many of the selected cases (a fresh child resumes after a fault).</summary>
    public int From { get; init; }

    /// <summary>Whether this process is a child of the runner.</summary>
    public bool IsChild => ChildChecks is not null || ChildBench;

    /// <summary>Print the usage.</summary>
    public bool Help { get; init; }

    /// <summary>Build the kernel resource table with this machine's NVRTC instead of running checks (needs no GPU).</summary>
    public bool Resources { get; init; }

    /// <summary>With <see cref="Resources"/>: the table file to compare with (or, with <see cref="WriteTable"/>, to write).</summary>
    public string? TablePath { get; init; }

    /// <summary>With <see cref="Resources"/>: write <see cref="TablePath"/> instead of comparing.</summary>
    public bool WriteTable { get; init; }

    /// <summary>With <see cref="Resources"/>: the architectures named by --arch, the reference first; null for every one CI compiles for.</summary>
    public IReadOnlyList<string>? Architectures { get; init; }

    /// <summary>See <see cref="DefaultTimeLimit"/>.</summary>
    public TimeSpan TimeLimit { get; init; } = DefaultTimeLimit;

    /// <summary>Parses <paramref name="args"/>.</summary>
    /// <exception cref="ArgumentException">An unknown option, or an option without its value.</exception>
    public static RunnerOptions Parse(IReadOnlyList<string> args)
    {
        var options = new RunnerOptions();
        for (int i = 0; i < args.Count; i++)
        {
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            options = args[i] switch
            {
                "--emulated" => options with { Emulated = true },
                "--filter" => options with { Filter = Value() },
                "--list" => options with { List = true },
                "--markdown" => options with { Markdown = true },
                "--self-test" => options with { SelfTest = true },
                "--no-bench" => options with { NoBench = true },
                "--bench-only" => options with { BenchOnly = true },
                "--bench-tiny" => options with { BenchTiny = true },
                "--time-limit" => options with { TimeLimit = ParseSeconds(Value()) },
                "--resources" => options with { Resources = true },
                "--table" => options with { TablePath = Value() },
                "--write" => options with { WriteTable = true },
                "--arch" => options with { Architectures = Value().Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) },
                "--in-process" => options with { InProcess = true },
                "--child-checks" => options with { ChildChecks = Value() },
                "--child-bench" => options with { ChildBench = true },
                "--from" => options with { From = ParseCount(Value()) },
                "-h" or "--help" => options with { Help = true },
                _ => throw new ArgumentException($"unknown argument '{args[i]}'"),
            };
        }
        if (options.NoBench && options.BenchOnly) throw new ArgumentException("--no-bench and --bench-only contradict each other");
        if (options.WriteTable && options.TablePath is null) throw new ArgumentException("--write needs --table FILE");
        if ((options.TablePath is not null || options.Architectures is not null) && !options.Resources)
            throw new ArgumentException("--table, --write and --arch go with --resources");
        if (options.ChildChecks is not null && options.ChildBench) throw new ArgumentException("--child-checks and --child-bench contradict each other");
        return options;
    }

    private static int ParseCount(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int count)
            ? count
            : throw new ArgumentException($"--from takes a count (>= 0), not '{text}'");

    private static TimeSpan ParseSeconds(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"--time-limit takes seconds (> 0), not '{text}'");

    /// <summary>The help text.</summary>
    public static string Usage { get; } = $$"""
        usage: Phi2Native.GpuCheck [--emulated] [--filter TEXT] [--list] [--markdown] [--time-limit S] [--self-test]
                                   [--no-bench | --bench-only] [--bench-tiny] [--in-process]
                                   [--resources [--table FILE [--write]] [--arch LIST]]

        Runs the GPU check in stages, each cut off when its budget is spent (what it had left is reported NOT RUN,
        not failed): {{string.Join(", ", Stages.All.Select(s => $"{s.Name} {Deadline.Seconds(s.Budget)} s"))}};
        {{Deadline.Seconds(Stages.Total)}} s in all. The probe says which GPU, driver and libraries it found; NVRTC compiles every
        kernel file; every device check (tests/Phi2Native.DeviceChecks, the bodies NUnit runs on the emulator) runs
        against its CPU reference, each family in a child process of this program, so that a kernel fault (a sticky
        CUDA error: the context is dead) costs the check that caused it, and a fresh child goes on from the next;
        compute-sanitizer (memcheck, racecheck) runs the families with shared memory and warp-level code, when it is
        found; the benchmarks (Phi-2 sizes, BF16, device-event timing) run in a child; then bench/peers/*.py. The
        tables come last. Without a GPU it says why and exits 0.

          --emulated      run on the kernel emulator (libphi2emu.so beside this program) instead: checks, and with
                          --bench-tiny the benchmarks, in children as on a GPU; no NVRTC, sanitizer or peers
          --filter TEXT   only the checks whose name contains TEXT (ignoring case)
          --list          print the check families, checks and kernels, and the benchmark cases; run nothing
          --markdown      print the tables as Markdown (for bench/RESULTS.md)
          --time-limit S  start nothing after S seconds in all (default {{Deadline.Seconds(DefaultTimeLimit)}}: the budgets less {{Deadline.Seconds(Stages.Reserve)}} s
                          to print the tables); each stage also keeps to its budget
          --no-bench      skip the benchmark stage
          --bench-only    run only the benchmarks (no NVRTC table, no checks, no sanitizer)
          --bench-tiny    run the benchmarks at tiny sizes; with --emulated it runs them on the emulator (CI)
          --in-process    run checks and benchmarks in this process, not in children: the first sticky fault then
                          ends them ("not run: context lost after X")
          --self-test     check the runner's own bookkeeping on planted checks (pass, wrong, throwing, leaking, a
                          sticky fault, a child that crashes and one that hangs) and planted reports
          --resources     compile every kernel with this machine's NVRTC (no GPU needed) and print the resource
                          table: registers, spills, stack, shared memory, launch at Phi-2's shapes, occupancy,
                          tensor-core instructions (cuobjdump); fails on a spill or an occupancy below its floor
            --table FILE  compare with FILE (kernels/resources.tsv); a difference fails (the table is stale)
            --write       write FILE instead (keeping its occupancy floors)
            --arch LIST   architectures, the reference first (default sm_90,sm_80)

        exit: 0 every selected check passed (and nothing else failed), or there is no GPU; 1 a check failed, threw or
        did not run, a kernel did not compile, a benchmark threw, compute-sanitizer reported an error, a peer script
        failed, or a GPU is present but could not be opened; 2 bad arguments. Stages other than the checks that were
        cut off or could not run (no compute-sanitizer, no peer script) are reported, not failed.
        """;
}
