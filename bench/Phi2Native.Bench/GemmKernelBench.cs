using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Phi2Native.Backends.Cpu;

namespace Phi2Native.Bench;

/// <summary>
/// The <c>gemm-kernel</c> mode: each fp32 microkernel alone, on packed panels small enough to stay in
/// L1/L2, on one core. This is the ceiling the blocked product can approach; the gap between the two
/// is packing, cache misses and edge tiles.
/// </summary>
internal static unsafe class GemmKernelBench
{
    public static int Run(ArgReader args)
    {
        int kc = args.Int("kc", 256);
        int givenPeak = args.Int("peak", 0, min: 0);
        bool markdown = args.Flag("markdown");
        args.RejectUnknown();

        double corePeak;
        if (givenPeak == 0)
        {
            var machine = Machine.Detect();
            foreach (string line in machine.Describe()) Console.WriteLine(line);
            corePeak = machine.PeakGflops / machine.Cores;
        }
        else corePeak = givenPeak / (double)Environment.ProcessorCount;
        Console.WriteLine($"one core: {corePeak:F1} GFLOP/s fp32; kc = {kc}; best of 5 runs of ~0.2 s");
        Console.WriteLine();

        var table = new Table("kernel", "tile (MR x NR)", "accelerated", "GFLOP/s", "% core peak");
        Add<Vector512Kernel<float>>(table, "Vector512", kc, corePeak);
        Add<Vector256Kernel<float>>(table, "Vector256", kc, corePeak);
        Add<PortableKernel<float>>(table, "Portable", kc, corePeak);
        table.Write(Console.Out, markdown);
        return 0;
    }

    private static void Add<TK>(Table table, string name, int kc, double corePeak) where TK : struct, IGemmKernel<float>
    {
        double gflops = TK.IsSupported ? Measure<TK>(kc) : double.NaN;
        table.Add(name, $"{TK.MR} x {TK.NR}", TK.IsSupported ? "yes" : "no",
            gflops.ToString("F1", CultureInfo.InvariantCulture), (100 * gflops / corePeak).ToString("F1", CultureInfo.InvariantCulture));
    }

    /// <summary>Calls the kernel repeatedly on one packed A panel [kc, MR] and one B panel [kc, NR], accumulating into one C tile.</summary>
    private static double Measure<TK>(int kc) where TK : struct, IGemmKernel<float>
    {
        float* a = (float*)NativeMemory.AlignedAlloc((nuint)(kc * TK.MR * 4), 64);
        float* b = (float*)NativeMemory.AlignedAlloc((nuint)(kc * TK.NR * 4), 64);
        float* c = (float*)NativeMemory.AlignedAlloc((nuint)(TK.MR * TK.NR * 4), 64);
        try
        {
            for (int i = 0; i < kc * TK.MR; i++) a[i] = 1e-3f * (i % 7);
            for (int i = 0; i < kc * TK.NR; i++) b[i] = 1e-3f * (i % 5);
            double flopsPerCall = 2.0 * TK.MR * TK.NR * kc;
            int calls = (int)Math.Max(1, 20e9 / 100 / flopsPerCall); // ~0.2 s at 100 GFLOP/s
            TK.Run(kc, a, b, c, TK.NR, 1f, 0f);
            double best = 0;
            for (int run = 0; run < 5; run++)
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < calls; i++) TK.Run(kc, a, b, c, TK.NR, 1f, 1f);
                best = Math.Max(best, flopsPerCall * calls / Stopwatch.GetElapsedTime(t0).TotalSeconds / 1e9);
            }
            return best;
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
            NativeMemory.AlignedFree(c);
        }
    }
}
