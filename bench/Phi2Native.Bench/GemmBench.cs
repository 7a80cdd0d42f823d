using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using Phi2Native.Backends.Cpu;

namespace Phi2Native.Bench;

/// <summary>
/// The <c>gemm</c> mode: for each shape, validate <see cref="CpuGemm"/> against a sampled reference,
/// warm up, time repeated runs, and print the median with GFLOP/s and % of the machine's peak.
/// </summary>
internal static class GemmBench
{
    public static int Run(ArgReader args)
    {
        var shapes = GemmShape.ParseList(args.String("shapes", GemmShape.DefaultList));
        int reps = args.Int("reps", 7), warmup = args.Int("warmup", 2, min: 0);
        int threads = args.Int("threads", Environment.ProcessorCount);
        var kernel = ParseKernel(args.String("kernel", "auto"));
        bool useDouble = args.Flag("double"), markdown = args.Flag("markdown");
        int givenPeak = args.Int("peak", 0, min: 0);
        args.RejectUnknown();

        double fp32Peak = Machine.Fp32PeakGflops(givenPeak);
        double peak = useDouble ? fp32Peak / 2 : fp32Peak;
        string precision = useDouble ? "fp64" : "fp32";
        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, {precision}, " +
                          $"kernel {(useDouble ? CpuGemm.Resolve<double>(kernel) : CpuGemm.Resolve<float>(kernel))}, " +
                          $"threads <= {threads}, median of {reps} after {warmup} warm-up runs");
        Console.WriteLine();

        // Median is the headline; best shows what an uncontended run reaches on a shared machine.
        var table = new Table("shape (MxNxK)", "op", "median ms", "best ms", "GFLOP/s", "% peak", "best GFLOP/s", "best % peak", "max err", "tol");
        bool allValid = true;
        foreach (var shape in shapes)
        {
            var r = useDouble ? Measure<double>(shape, kernel, threads, reps, warmup) : Measure<float>(shape, kernel, threads, reps, warmup);
            double gflops = shape.Flops / (r.MedianMs * 1e6), bestGflops = shape.Flops / (r.BestMs * 1e6);
            allValid &= r.Valid;
            table.Add(shape.ToString(), shape.Ops, Ms(r.MedianMs), Ms(r.BestMs), F(gflops, "F1"), F(100 * gflops / peak, "F1"),
                F(bestGflops, "F1"), F(100 * bestGflops / peak, "F1"),
                r.MaxError.ToString("E1", CultureInfo.InvariantCulture), r.Tolerance.ToString("E1", CultureInfo.InvariantCulture));
            if (!r.Valid) Console.Error.WriteLine($"{shape} {shape.Ops}: max error {r.MaxError:E2} exceeds {r.Tolerance:E2}: result is WRONG");
        }
        table.Write(Console.Out, markdown);
        return allValid ? 0 : 2;

        static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
        static string Ms(double ms) => F(ms, ms < 1 ? "F4" : "F2");
    }

    private readonly record struct Result(double MedianMs, double BestMs, double MaxError, double Tolerance)
    {
        public bool Valid => MaxError <= Tolerance;
    }

    private static Result Measure<T>(GemmShape s, GemmKernelKind kernel, int threads, int reps, int warmup)
        where T : unmanaged, INumber<T>
    {
        // Operands as stored, matrices back to back: A [M, K] or [K, M]; B [K, N] or [N, K]; values uniform in [-1, 1).
        var random = new Random(1234);
        int sizeA = s.M * s.K, sizeB = s.K * s.N, sizeC = s.M * s.N;
        T[] a = RandomArray<T>(random, (long)sizeA * s.Batch), b = RandomArray<T>(random, (long)sizeB * s.Batch);
        T[] c = new T[(long)sizeC * s.Batch];
        int lda = s.TransposeA ? s.M : s.K, ldb = s.TransposeB ? s.K : s.N;
        void Once() => CpuGemm.Batched(kernel, threads, s.TransposeA, s.TransposeB, s.M, s.N, s.K, T.One, a, lda, sizeA, b, ldb, sizeB,
            T.Zero, c, s.N, sizeC, s.Batch);

        // Validate the first and the last product of a batch.
        Once();
        double maxError = 0, tolerance = 0;
        foreach (int i in new[] { 0, s.Batch - 1 }.Distinct())
        {
            var (error, tol) = GemmReference.Check(s, a.AsSpan(i * sizeA, sizeA).ToArray(), b.AsSpan(i * sizeB, sizeB).ToArray(),
                c.AsSpan(i * sizeC, sizeC).ToArray());
            maxError = Math.Max(maxError, error);
            tolerance = tol;
        }
        for (int i = 0; i < warmup; i++) Once();
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Once();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(times);
        return new Result(times[reps / 2], times[0], maxError, tolerance);
    }

    private static T[] RandomArray<T>(Random random, long length) where T : unmanaged, INumber<T>
    {
        var array = new T[length];
        for (long i = 0; i < length; i++) array[i] = T.CreateTruncating(random.NextDouble() * 2 - 1);
        return array;
    }

    private static GemmKernelKind ParseKernel(string name) => name switch
    {
        "auto" => GemmKernelKind.Auto,
        "v512" => GemmKernelKind.Vector512,
        "v256" => GemmKernelKind.Vector256,
        "portable" => GemmKernelKind.Portable,
        _ => throw new ArgumentException($"--kernel must be auto, v512, v256 or portable (got '{name}')"),
    };
}
