using Phi2Native.Cuda;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// One check of the CUDA path: it runs kernels or cuBLAS calls through an <see cref="IDeviceApi"/> and compares the
/// result with a CPU reference (the CPU backend, or a plain loop in double). The body is the same on the emulated
/// device and on a GPU, so a check that passes in CI and fails on the GPU points at what the emulator cannot show.
/// </summary>
/// <param name="Name">Unique and stable: the test name in NUnit and the row in the GPU runner's table.</param>
/// <param name="Kernels">The kernels (or cuBLAS entry points) the check exercises, for the runner's table.</param>
/// <param name="Run">The body: allocates on the device it is given, frees what it allocated, never throws for a
/// wrong answer (it returns the comparison), and throws only when the device itself fails.</param>
public sealed record DeviceCheck(string Name, IReadOnlyList<string> Kernels, Func<IDeviceApi, CheckResult> Run)
{
    /// <summary>The name, so NUnit's TestCaseSource and logs print it.</summary>
    public override string ToString() => Name;
}

/// <summary>
/// A check's outcome: the largest absolute difference from the reference and the largest difference measured in
/// the allowed tolerance (<c>|actual - expected| / (atol + rtol * |expected|)</c>, so at most 1 passes).
/// </summary>
/// <param name="MaxAbsoluteError">max |actual - expected| over every compared element.</param>
/// <param name="WorstRatio">max |actual - expected| / (atol + rtol |expected|); infinity where a NaN or Inf disagrees.</param>
/// <param name="Detail">Where the worst element is, or why the check failed.</param>
public sealed record CheckResult(double MaxAbsoluteError, double WorstRatio, string Detail)
{
    /// <summary>True when every element is within tolerance.</summary>
    public bool Passed => WorstRatio <= 1.0;

    /// <summary>Passed or failed, the error, and the detail, on one line.</summary>
    public override string ToString() =>
        $"{(Passed ? "passed" : "FAILED")}: max |error| {MaxAbsoluteError:G3}, worst {WorstRatio:G3} of tolerance; {Detail}";

    /// <summary>The result of several comparisons: the worst of each measure, and the detail of the worst ratio.</summary>
    public static CheckResult Combine(params CheckResult[] parts)
    {
        if (parts.Length == 0) throw new ArgumentException("nothing to combine", nameof(parts));
        var worst = parts.MaxBy(p => p.WorstRatio)!;
        return worst with { MaxAbsoluteError = parts.Max(p => p.MaxAbsoluteError) };
    }

    /// <summary>
    /// Compares <paramref name="actual"/> with <paramref name="expected"/> element by element. NaN must meet NaN and
    /// an infinity the same infinity; a length mismatch fails.
    /// </summary>
    /// <param name="what">Names the output in the detail, e.g. "y" or "dX".</param>
    public static CheckResult Compare(string what, ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double absoluteTolerance, double relativeTolerance)
    {
        if (actual.Length != expected.Length)
            return new CheckResult(double.PositiveInfinity, double.PositiveInfinity, $"{what}: {actual.Length} values, expected {expected.Length}");
        double maxError = 0, worst = 0;
        int at = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            double error, ratio;
            if (double.IsNaN(e) || double.IsInfinity(e) || double.IsNaN(a) || double.IsInfinity(a))
            {
                bool same = double.IsNaN(e) ? double.IsNaN(a) : a.Equals(e);
                error = same ? 0 : double.PositiveInfinity;
                ratio = error;
            }
            else
            {
                error = Math.Abs(a - e);
                // An exact match passes even with a zero tolerance (0 / 0 would be NaN).
                ratio = error == 0 ? 0 : error / (absoluteTolerance + relativeTolerance * Math.Abs(e));
            }
            maxError = Math.Max(maxError, error);
            if (ratio > worst || at < 0) { worst = ratio; at = i; }
        }
        string detail = at < 0 ? $"{what}: empty" : $"{what}[{at}] = {actual[at]:G9}, expected {expected[at]:G9} (atol {absoluteTolerance:G2}, rtol {relativeTolerance:G2})";
        return new CheckResult(maxError, worst, detail);
    }

    /// <summary>
    /// Compares bit for bit (so -0 differs from +0), except that any NaN matches any NaN: NaN payloads are not part
    /// of any conversion's contract. The ratio is 0 when everything matches and infinity otherwise.
    /// </summary>
    /// <param name="what">Names the output in the detail, e.g. "y".</param>
    public static CheckResult CompareBits(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length)
            return new CheckResult(double.PositiveInfinity, double.PositiveInfinity, $"{what}: {actual.Length} values, expected {expected.Length}");
        int mismatches = 0, first = -1;
        double maxError = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            bool same = float.IsNaN(expected[i])
                ? float.IsNaN(actual[i])
                : BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(expected[i]);
            if (same) continue;
            mismatches++;
            if (first < 0) first = i;
            double error = Math.Abs((double)actual[i] - expected[i]);
            maxError = Math.Max(maxError, double.IsNaN(error) ? double.PositiveInfinity : error);
        }
        if (first < 0) return new CheckResult(0, 0, $"{what}: {actual.Length} values equal bit for bit");
        return new CheckResult(maxError, double.PositiveInfinity,
            $"{what}: {mismatches} of {actual.Length} differ; first {what}[{first}] = {actual[first]:R} (0x{BitConverter.SingleToInt32Bits(actual[first]):x8}), " +
            $"expected {expected[first]:R} (0x{BitConverter.SingleToInt32Bits(expected[first]):x8})");
    }

    /// <summary><see cref="Compare(string, ReadOnlySpan{float}, ReadOnlySpan{double}, double, double)"/> against fp32 expectations.</summary>
    public static CheckResult Compare(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double absoluteTolerance, double relativeTolerance)
    {
        var wide = new double[expected.Length];
        for (int i = 0; i < wide.Length; i++) wide[i] = expected[i];
        return Compare(what, actual, wide, absoluteTolerance, relativeTolerance);
    }
}
