using System.Diagnostics;
using System.Globalization;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Attention;

namespace Phi2Native.Bench;

/// <summary>
/// The <c>attention</c> mode: causal attention of the CPU backend (<see cref="CpuAttention"/>, fp32, Tq = Tk = T)
/// at Phi-2's head layout (B = 1, H = 32, D = 80) for several T, and at the demo model's (B = 4, T = 64, H = 4,
/// D = 32). Each shape is first checked against a double-precision score-matrix reference on one (batch, head)
/// pair - forward output, log-sum-exp and all three gradients - then timed: median of repeated forward calls
/// and of backward calls that want dq, dk and dv.
/// </summary>
internal static class AttentionBench
{
    private sealed record Case(int Batch, int Time, int Heads, int HeadDim)
    {
        public override string ToString() => $"{Batch}x{Time}x{Heads}x{HeadDim}";

        /// <summary>Visible (query, key) pairs of the causal mask over all heads: B H T (T + 1) / 2.</summary>
        public double VisiblePairs => (double)Batch * Heads * Time * (Time + 1) / 2;

        /// <summary>Forward: q . k^T and p . v, 2 flops per multiply-add, over the visible pairs only.</summary>
        public double ForwardFlops => 4 * VisiblePairs * HeadDim;

        /// <summary>Backward: q . k^T again (recompute), dO . v^T, p^T . dO, ds . k, ds^T . q: 2.5 x the forward.</summary>
        public double BackwardFlops => 10 * VisiblePairs * HeadDim;

        public long QSize => (long)Batch * Time * Heads * HeadDim;
    }

    public static int Run(ArgReader args)
    {
        int reps = args.Int("reps", 5), warmup = args.Int("warmup", 1, min: 0);
        string timeList = args.String("time", "128,512,2048");
        bool markdown = args.Flag("markdown"), tiny = !args.Flag("no-tiny");
        int givenPeak = args.Int("peak", 0, min: 0);
        args.RejectUnknown();
        var cases = new List<Case>();
        foreach (string t in timeList.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(t, CultureInfo.InvariantCulture, out int time) || time < 1)
                throw new ArgumentException($"--time takes a comma-separated list of positive integers (got '{t}')");
            cases.Add(new Case(1, time, 32, 80));
        }
        if (tiny) cases.Add(new Case(4, 64, 4, 32));

        double peak = Machine.Fp32PeakGflops(givenPeak);
        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, fp32, {Environment.ProcessorCount} threads, " +
                          $"median of {reps} after {warmup} warm-up runs");
        Console.WriteLine();

        var table = new Table("shape (BxTxHxD)", "forward ms", "fwd GFLOP/s", "fwd % peak", "backward ms", "bwd GFLOP/s", "bwd % peak",
            "max err", "tol");
        bool allValid = true;
        foreach (var c in cases)
        {
            var r = Measure(c, reps, warmup);
            double fwd = c.ForwardFlops / (r.ForwardMs * 1e6), bwd = c.BackwardFlops / (r.BackwardMs * 1e6);
            allValid &= r.MaxError <= r.Tolerance;
            table.Add(c.ToString(), Ms(r.ForwardMs), F(fwd, "F1"), F(100 * fwd / peak, "F1"), Ms(r.BackwardMs), F(bwd, "F1"),
                F(100 * bwd / peak, "F1"), r.MaxError.ToString("E1", CultureInfo.InvariantCulture),
                r.Tolerance.ToString("E1", CultureInfo.InvariantCulture));
            if (r.MaxError > r.Tolerance)
                Console.Error.WriteLine($"{c}: max error {r.MaxError:E2} ({r.WorstTensor}) exceeds {r.Tolerance:E2}: result is WRONG");
        }
        table.Write(Console.Out, markdown);
        Console.WriteLine();
        Console.WriteLine("GFLOP/s counts the causal half only (B H T (T+1)/2 visible scores): forward 2 products, backward 5 " +
                          "(the scores are recomputed); \"max err\" is the largest |fp32 - fp64| / max|fp64| over output, " +
                          "log-sum-exp, dq, dk, dv of one (batch, head) pair.");
        return allValid ? 0 : 2;

        static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
        static string Ms(double ms) => F(ms, ms < 1 ? "F3" : "F2");
    }

    private readonly record struct Result(double ForwardMs, double BackwardMs, double MaxError, double Tolerance, string WorstTensor);

    private static Result Measure(Case c, int reps, int warmup)
    {
        var random = new Random(1234);
        float[] q = RandomArray(random, c.QSize), k = RandomArray(random, c.QSize), v = RandomArray(random, c.QSize);
        float[] dOutput = RandomArray(random, c.QSize);
        float[] output = new float[c.QSize], lse = new float[(long)c.Batch * c.Heads * c.Time];
        float[] dq = new float[c.QSize], dk = new float[c.QSize], dv = new float[c.QSize];
        void Forward() => CpuAttention.Forward<float>(q, k, v, output, lse, c.Batch, c.Time, c.Time, c.Heads, c.HeadDim);
        void Backward() => CpuAttention.Backward<float>(dOutput, q, k, v, output, lse, dq, dk, dv,
            c.Batch, c.Time, c.Time, c.Heads, c.HeadDim);

        Forward();
        Backward();
        var (maxError, worst) = Check(c, q, k, v, dOutput, output, lse, dq, dk, dv);
        // Rounding of a float dot product or sum grows at most linearly with its length (T keys, or T queries).
        double tolerance = 4 * c.Time * Math.Pow(2, -23);
        return new Result(TimeMs(Forward, reps, warmup), TimeMs(Backward, reps, warmup), maxError, tolerance, worst);
    }

    /// <summary>
    /// Median of <paramref name="reps"/> timed runs after at least <paramref name="warmup"/> untimed ones and at
    /// least a second of them, so that code the JIT recompiles in the background (tiered compilation, where the
    /// host enables quick JIT; this harness does not, see its .csproj) has settled before timing starts.
    /// </summary>
    private static double TimeMs(Action run, int reps, int warmup)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < warmup || Stopwatch.GetElapsedTime(start).TotalSeconds < 1; i++) run();
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            run();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[reps / 2];
    }

    /// <summary>
    /// The obvious algorithm in double for the last (batch, head) pair: causal scores, softmax, p . v; then
    /// delta, dp, ds and the three gradients. Returns the largest error relative to each tensor's magnitude.
    /// </summary>
    private static (double MaxError, string Worst) Check(Case c, float[] q, float[] k, float[] v, float[] dOutput,
        float[] output, float[] lse, float[] dq, float[] dk, float[] dv)
    {
        int t = c.Time, d = c.HeadDim, b = c.Batch - 1, h = c.Heads - 1;
        long Row(int i) => ((long)(b * t + i) * c.Heads + h) * d;
        double scale = 1 / Math.Sqrt(d);
        var p = new double[t][];          // p[i][j], j <= i
        var o = new double[t, d];
        var refLse = new double[t];
        for (int i = 0; i < t; i++)
        {
            p[i] = new double[i + 1];
            double max = double.NegativeInfinity;
            for (int j = 0; j <= i; j++)
            {
                double s = 0;
                for (int x = 0; x < d; x++) s += (double)q[Row(i) + x] * k[Row(j) + x];
                p[i][j] = s * scale;
                max = Math.Max(max, p[i][j]);
            }
            double sum = 0;
            for (int j = 0; j <= i; j++) sum += Math.Exp(p[i][j] - max);
            refLse[i] = max + Math.Log(sum);
            for (int j = 0; j <= i; j++)
            {
                p[i][j] = Math.Exp(p[i][j] - refLse[i]);
                for (int x = 0; x < d; x++) o[i, x] += p[i][j] * v[Row(j) + x];
            }
        }

        var refDq = new double[t, d];
        var refDk = new double[t, d];
        var refDv = new double[t, d];
        for (int i = 0; i < t; i++)
        {
            double delta = 0;
            for (int x = 0; x < d; x++) delta += dOutput[Row(i) + x] * o[i, x];
            for (int j = 0; j <= i; j++)
            {
                double dp = 0;
                for (int x = 0; x < d; x++) dp += (double)dOutput[Row(i) + x] * v[Row(j) + x];
                double ds = p[i][j] * (dp - delta) * scale;
                for (int x = 0; x < d; x++)
                {
                    refDv[j, x] += p[i][j] * dOutput[Row(i) + x];
                    refDq[i, x] += ds * k[Row(j) + x];
                    refDk[j, x] += ds * q[Row(i) + x];
                }
            }
        }

        double worst = 0;
        string worstName = "";
        void Compare(string name, double[,] expected, float[] actual)
        {
            double magnitude = 0, error = 0;
            for (int i = 0; i < t; i++)
            for (int x = 0; x < d; x++)
            {
                magnitude = Math.Max(magnitude, Math.Abs(expected[i, x]));
                double e = Math.Abs(actual[Row(i) + x] - expected[i, x]);
                error = double.IsNaN(e) ? double.PositiveInfinity : Math.Max(error, e);
            }
            Take(name, error / Math.Max(magnitude, double.Epsilon));
        }
        void Take(string name, double error)
        {
            if (error > worst || double.IsNaN(error)) (worst, worstName) = (double.IsNaN(error) ? double.PositiveInfinity : error, name);
        }
        Compare("output", o, output);
        double lseError = 0, lseMagnitude = 0;
        for (int i = 0; i < t; i++)
        {
            lseMagnitude = Math.Max(lseMagnitude, Math.Abs(refLse[i]));
            lseError = Math.Max(lseError, Math.Abs(lse[((long)b * c.Heads + h) * t + i] - refLse[i]));
        }
        Take("logSumExp", lseError / Math.Max(lseMagnitude, 1));
        Compare("dq", refDq, dq);
        Compare("dk", refDk, dk);
        Compare("dv", refDv, dv);
        return (worst, worstName);
    }

    private static float[] RandomArray(Random random, long length)
    {
        var array = new float[length];
        for (long i = 0; i < length; i++) array[i] = (float)(random.NextDouble() * 2 - 1);
        return array;
    }
}
