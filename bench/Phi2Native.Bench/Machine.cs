using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Phi2Native.Bench;

/// <summary>
/// The fp32 ceiling of this machine: cores x FMA pipes x fp32 lanes per pipe x 2 flops x clock.
/// </summary>
/// <remarks>
/// Pipes and their width are not visible to software, so they come from the CPU family (assumptions
/// printed with the result): AMD Zen 2-4 (family 0x17/0x19) have two 256-bit FMA pipes, and Zen 4
/// runs a 512-bit FMA as two halves, so AVX-512 code peaks at the same 32 fp32 flops/cycle as AVX2;
/// Zen 5 (0x1A) and Intel AVX-512 server cores are taken as two 512-bit pipes; other x64 as two
/// 256-bit pipes. A timed loop of independent FMAs on every core checks the assumption.
/// The clock is the larger of /proc/cpuinfo's "cpu MHz" and a clock measured from a chain of
/// dependent FMAs (4-cycle latency on Zen 2-5 and Intel since Skylake): a boost clock above the
/// nominal one then raises the ceiling rather than flattering the percentage.
/// </remarks>
internal sealed record Machine(
    string CpuName, int Cores, int FmaPipes, int FmaPipeBits, string PipeSource,
    double? CpuInfoGHz, double MeasuredGHz, double MeasuredFlopsPerCycle)
{
    /// <summary>fp32 flops per cycle per core: pipes x lanes x 2 (multiply + add).</summary>
    public int Fp32FlopsPerCycle => FmaPipes * (FmaPipeBits / 32) * 2;

    /// <summary>Clock used for the ceiling, GHz.</summary>
    public double ClockGHz => Math.Max(CpuInfoGHz ?? 0, MeasuredGHz);

    /// <summary>Where <see cref="ClockGHz"/> came from.</summary>
    public string ClockSource => CpuInfoGHz is { } c && c >= MeasuredGHz ? "/proc/cpuinfo cpu MHz" : "dependent-FMA loop";

    /// <summary>fp32 ceiling of all cores, GFLOP/s.</summary>
    public double PeakGflops => Cores * Fp32FlopsPerCycle * ClockGHz;

    /// <summary>
    /// The fp32 ceiling of all cores for a bench: <paramref name="givenGflops"/> when the user gave one with --peak,
    /// else probed (and described on standard output, so every table says what its percentages are of).
    /// </summary>
    public static double Fp32PeakGflops(int givenGflops)
    {
        if (givenGflops > 0)
        {
            Console.WriteLine($"peak fp32: {givenGflops} GFLOP/s (given with --peak, not probed)");
            return givenGflops;
        }
        var machine = Detect();
        foreach (string line in machine.Describe()) Console.WriteLine(line);
        return machine.PeakGflops;
    }

    /// <summary>Probes the machine (about a second of timed FMA loops on every core).</summary>
    public static Machine Detect()
    {
        (int pipes, int bits, string source) = FmaPipesFromCpuFamily();
        double measuredGHz = MeasureClockGHz();
        double flopsPerCycle = MeasureFp32FlopsPerSecond() / (measuredGHz * 1e9);
        return new Machine(ReadCpuInfo("model name") ?? "unknown CPU", Environment.ProcessorCount, pipes, bits, source,
            ReadCpuInfo("cpu MHz") is { } mhz && double.TryParse(mhz, System.Globalization.CultureInfo.InvariantCulture, out double v) ? v / 1000 : null,
            measuredGHz, flopsPerCycle);
    }

    /// <summary>Lines for the report: the ceiling and how each factor was obtained.</summary>
    public IEnumerable<string> Describe()
    {
        yield return $"CPU: {CpuName}, {Cores} cores visible to the process";
        yield return $"FMA: {FmaPipes} x {FmaPipeBits}-bit pipes per core ({PipeSource}) = {Fp32FlopsPerCycle} fp32 flops/cycle/core; " +
                     $"measured (all cores busy): {MeasuredFlopsPerCycle:F1} flops/cycle/core";
        yield return $"clock: {ClockGHz:F3} GHz from {ClockSource} (cpuinfo {(CpuInfoGHz is { } c ? $"{c:F3}" : "n/a")} GHz, " +
                     $"dependent-FMA loop on all cores {MeasuredGHz:F3} GHz)";
        yield return $"peak fp32: {Cores} x {Fp32FlopsPerCycle} x {ClockGHz:F3} GHz = {PeakGflops:F1} GFLOP/s";
    }

    private static (int Pipes, int Bits, string Source) FmaPipesFromCpuFamily()
    {
        if (!X86Base.IsSupported) return (2, 128, "assumed: non-x86, two 128-bit SIMD FMA pipes");
        (int _, int ebx, int ecx, int edx) = X86Base.CpuId(0, 0);
        string vendor = string.Concat(Chars(ebx), Chars(edx), Chars(ecx));
        int eax1 = X86Base.CpuId(1, 0).Eax;
        int family = ((eax1 >> 8) & 0xF) == 0xF ? 0xF + ((eax1 >> 20) & 0xFF) : (eax1 >> 8) & 0xF;
        bool avx512 = Avx512F.IsSupported;
        return vendor switch
        {
            "AuthenticAMD" when family is 0x17 or 0x19 => (2, 256, $"AMD family 0x{family:X}: Zen 2-4, 512-bit ops double-pumped"),
            "AuthenticAMD" when family >= 0x1A => (2, avx512 ? 512 : 256, $"AMD family 0x{family:X}: Zen 5 or later"),
            "GenuineIntel" when avx512 => (2, 512, "Intel with AVX-512: assumed two 512-bit pipes"),
            _ => (2, Fma.IsSupported ? 256 : 128, $"{vendor} family 0x{family:X}: assumed two {(Fma.IsSupported ? 256 : 128)}-bit pipes"),
        };

        static string Chars(int r) => string.Concat(Enumerable.Range(0, 4).Select(i => (char)((r >> (8 * i)) & 0xFF)));
    }

    private static string? ReadCpuInfo(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
            {
                int colon = line.IndexOf(':');
                if (colon > 0 && line[..colon].Trim() == key) return line[(colon + 1)..].Trim();
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>
    /// Clock from chains of dependent scalar FMAs, one per core at once (the all-core clock, which
    /// may be below the one-core boost): each FMA waits 4 cycles for the previous one. The slowest
    /// core's rate, best of several runs.
    /// </summary>
    private static double MeasureClockGHz()
    {
        const long chain = 40_000_000;
        DependentFmas(1000, 1.0000001); // JIT + warm up
        double best = 0;
        for (int run = 0; run < 5; run++)
        {
            double[] seconds = OnAllCores(() => DependentFmas(chain / 8, 1.0000001));
            best = Math.Max(best, chain * 4 / seconds.Max() / 1e9);
        }
        return best;
    }

    /// <summary>Runs <paramref name="work"/> on one thread per core, started together; returns each thread's seconds.</summary>
    private static double[] OnAllCores(Func<double> work)
    {
        int cores = Environment.ProcessorCount;
        var seconds = new double[cores];
        using var start = new Barrier(cores);
        var threads = Enumerable.Range(0, cores).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            long t0 = Stopwatch.GetTimestamp();
            work();
            seconds[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        return seconds;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static double DependentFmas(long iterations, double x)
    {
        double y = 0.999999, z = 1e-9;
        for (long i = 0; i < iterations; i++)
        {
            // Eight per iteration so that the loop's own instructions hide under the FMA latency.
            x = Math.FusedMultiplyAdd(x, y, z); x = Math.FusedMultiplyAdd(x, y, z);
            x = Math.FusedMultiplyAdd(x, y, z); x = Math.FusedMultiplyAdd(x, y, z);
            x = Math.FusedMultiplyAdd(x, y, z); x = Math.FusedMultiplyAdd(x, y, z);
            x = Math.FusedMultiplyAdd(x, y, z); x = Math.FusedMultiplyAdd(x, y, z);
        }
        return x;
    }

    /// <summary>fp32 flops/s per core with every core running 12 independent FMA chains of the widest accelerated vector (slowest core, best run).</summary>
    private static double MeasureFp32FlopsPerSecond()
    {
        const long iterations = 20_000_000;
        IndependentFmas(1000);
        int lanes = Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 4;
        double best = 0;
        for (int run = 0; run < 5; run++)
        {
            double[] seconds = OnAllCores(() => IndependentFmas(iterations));
            best = Math.Max(best, iterations * 12.0 * lanes * 2 / seconds.Max());
        }
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static double IndependentFmas(long iterations)
    {
        if (Vector512.IsHardwareAccelerated) return Chains(iterations, Vector512.Create(1f), Vector512.Create(0.999999f), Vector512.Create(1e-7f));
        if (Vector256.IsHardwareAccelerated) return Chains(iterations, Vector256.Create(1f), Vector256.Create(0.999999f), Vector256.Create(1e-7f));
        return Chains(iterations, Vector128.Create(1f), Vector128.Create(0.999999f), Vector128.Create(1e-7f));
    }

    // One generic body per vector width: twelve accumulators cover the 4-cycle latency of two pipes.
    private static float Chains(long iterations, Vector512<float> x, Vector512<float> y, Vector512<float> z)
    {
        Vector512<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, y, z); a1 = Vector512.FusedMultiplyAdd(a1, y, z); a2 = Vector512.FusedMultiplyAdd(a2, y, z);
            a3 = Vector512.FusedMultiplyAdd(a3, y, z); a4 = Vector512.FusedMultiplyAdd(a4, y, z); a5 = Vector512.FusedMultiplyAdd(a5, y, z);
            a6 = Vector512.FusedMultiplyAdd(a6, y, z); a7 = Vector512.FusedMultiplyAdd(a7, y, z); a8 = Vector512.FusedMultiplyAdd(a8, y, z);
            a9 = Vector512.FusedMultiplyAdd(a9, y, z); a10 = Vector512.FusedMultiplyAdd(a10, y, z); a11 = Vector512.FusedMultiplyAdd(a11, y, z);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    private static float Chains(long iterations, Vector256<float> x, Vector256<float> y, Vector256<float> z)
    {
        Vector256<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, y, z); a1 = Vector256.FusedMultiplyAdd(a1, y, z); a2 = Vector256.FusedMultiplyAdd(a2, y, z);
            a3 = Vector256.FusedMultiplyAdd(a3, y, z); a4 = Vector256.FusedMultiplyAdd(a4, y, z); a5 = Vector256.FusedMultiplyAdd(a5, y, z);
            a6 = Vector256.FusedMultiplyAdd(a6, y, z); a7 = Vector256.FusedMultiplyAdd(a7, y, z); a8 = Vector256.FusedMultiplyAdd(a8, y, z);
            a9 = Vector256.FusedMultiplyAdd(a9, y, z); a10 = Vector256.FusedMultiplyAdd(a10, y, z); a11 = Vector256.FusedMultiplyAdd(a11, y, z);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    private static float Chains(long iterations, Vector128<float> x, Vector128<float> y, Vector128<float> z)
    {
        Vector128<float> a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector128.FusedMultiplyAdd(a0, y, z); a1 = Vector128.FusedMultiplyAdd(a1, y, z); a2 = Vector128.FusedMultiplyAdd(a2, y, z);
            a3 = Vector128.FusedMultiplyAdd(a3, y, z); a4 = Vector128.FusedMultiplyAdd(a4, y, z); a5 = Vector128.FusedMultiplyAdd(a5, y, z);
            a6 = Vector128.FusedMultiplyAdd(a6, y, z); a7 = Vector128.FusedMultiplyAdd(a7, y, z); a8 = Vector128.FusedMultiplyAdd(a8, y, z);
            a9 = Vector128.FusedMultiplyAdd(a9, y, z); a10 = Vector128.FusedMultiplyAdd(a10, y, z); a11 = Vector128.FusedMultiplyAdd(a11, y, z);
        }
        return Vector128.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}
