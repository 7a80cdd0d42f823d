using NUnit.Framework;

namespace Phi2Native.Tests.Support;

/// <summary>Element-wise comparison that, on failure, names the tensor, the largest error, where it is, and the first mismatch.</summary>
public static class TensorAssert
{
    /// <summary>
    /// Asserts actual ≈ expected within <paramref name="tolerance"/> (see <see cref="Tolerance"/>), plus
    /// <paramref name="absoluteFloor"/>: a fixed allowance for noise in the reference itself (finite differences).
    /// </summary>
    public static void Close(string name, ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, Tolerance tolerance, string? hint = null, double absoluteFloor = 0)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{name}: element count");
        double scale = 0;
        foreach (double value in expected) scale = Math.Max(scale, Math.Abs(value));
        int worst = -1, firstBad = -1, bad = 0;
        double worstError = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(actual[i]) || double.IsNaN(expected[i])) error = double.PositiveInfinity;
            if (error > worstError || worst < 0) (worstError, worst) = (error, i);
            if (!(error <= absoluteFloor + tolerance.Absolute * scale + tolerance.Relative * Math.Abs(expected[i])))
            {
                bad++;
                if (firstBad < 0) firstBad = i;
            }
        }
        if (bad == 0) return;
        Assert.Fail($"{name}: {bad} of {expected.Length} elements out of tolerance (abs {tolerance.Absolute:G3} x max|ref| {scale:G4} + {absoluteFloor:G3}, rel {tolerance.Relative:G3}); " +
                    $"largest error {worstError:G4} at [{worst}] (expected {expected[worst]:G9}, got {actual[worst]:G9}); " +
                    $"first mismatch at [{firstBad}] (expected {expected[firstBad]:G9}, got {actual[firstBad]:G9})" +
                    (hint is null ? "" : $"; {hint}"));
    }

    /// <summary>Float overload.</summary>
    public static void Close(string name, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, Tolerance tolerance, string? hint = null) =>
        Close(name, ToDouble(expected), ToDouble(actual), tolerance, hint);

    private static double[] ToDouble(ReadOnlySpan<float> values)
    {
        var result = new double[values.Length];
        for (int i = 0; i < values.Length; i++) result[i] = values[i];
        return result;
    }
}
