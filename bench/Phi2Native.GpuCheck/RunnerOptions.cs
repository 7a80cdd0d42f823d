using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>The runner's command line, parsed by hand: the runner takes no dependencies beyond the check library.</summary>
internal sealed record RunnerOptions
{
    /// <summary>How long checks may run in all before the rest are reported as not run. bench/gpu-check.sh kills the
    /// runner at 280 s; stopping checks well before that still leaves time to print the tables.</summary>
    public static readonly TimeSpan DefaultTimeLimit = TimeSpan.FromSeconds(240);

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
                "-h" or "--help" => options with { Help = true },
                _ => throw new ArgumentException($"unknown argument '{args[i]}'"),
            };
        }
        if (options.NoBench && options.BenchOnly) throw new ArgumentException("--no-bench and --bench-only contradict each other");
        if (options.WriteTable && options.TablePath is null) throw new ArgumentException("--write needs --table FILE");
        if ((options.TablePath is not null || options.Architectures is not null) && !options.Resources)
            throw new ArgumentException("--table, --write and --arch go with --resources");
        return options;
    }

    private static TimeSpan ParseSeconds(string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"--time-limit takes seconds (> 0), not '{text}'");

    /// <summary>The help text.</summary>
    public const string Usage = """
        usage: Phi2Native.GpuCheck [--emulated] [--filter TEXT] [--list] [--markdown] [--time-limit S] [--self-test]
                                   [--no-bench | --bench-only] [--bench-tiny]

        Compiles every kernel with NVRTC for the first GPU, runs every device check (tests/Phi2Native.DeviceChecks,
        the same bodies NUnit runs on the emulator) against its CPU reference, then the benchmarks (Phi-2 sizes,
        BF16, device-event timing), and prints the tables last. Without a GPU it says why and exits 0.

          --emulated      run the checks on the kernel emulator (libphi2emu.so beside this program) instead
          --filter TEXT   only the checks whose name contains TEXT (ignoring case)
          --list          print the checks and their kernels, run nothing
          --markdown      print the tables as Markdown (for bench/RESULTS.md)
          --time-limit S  stop starting checks and benchmarks after S seconds in all (default 240); the rest
                          count as not run
          --no-bench      skip the benchmark stage
          --bench-only    run only the benchmarks (no NVRTC table, no checks)
          --bench-tiny    run the benchmarks at tiny sizes; with --emulated it runs them on the emulator (CI)
          --self-test     check the runner's own bookkeeping on planted checks (pass, wrong, throwing, leaking)
          --resources     compile every kernel with this machine's NVRTC (no GPU needed) and print the resource
                          table: registers, spills, stack, shared memory, launch at Phi-2's shapes, occupancy,
                          tensor-core instructions (cuobjdump); fails on a spill or an occupancy below its floor
            --table FILE  compare with FILE (kernels/resources.tsv); a difference fails (the table is stale)
            --write       write FILE instead (keeping its occupancy floors)
            --arch LIST   architectures, the reference first (default sm_90,sm_80)

        exit: 0 every selected check passed (and no benchmark threw), or there is no GPU; 1 a check failed, threw or
        did not run, a benchmark threw, a kernel did not compile, or a GPU is present but could not be opened;
        2 bad arguments. Benchmarks left unrun by the time limit are reported, not failed.
        """;
}
