namespace Phi2Native;

/// <summary>
/// The range tests of option and config values, written so that NaN fails every one of them: a comparison with NaN is
/// false, so each test asks that the value lies inside its range (never that it lies outside, which NaN would pass).
/// </summary>
internal static class NumberChecks
{
    /// <summary>A dropout probability: 0 &lt;= p &lt; 1.</summary>
    public static bool IsProbability(double p) => p >= 0 && p < 1;

    /// <summary>A finite number &gt;= 0.</summary>
    public static bool IsFiniteNonNegative(double x) => x >= 0 && double.IsFinite(x);

    /// <summary>A finite number &gt; 0.</summary>
    public static bool IsFinitePositive(double x) => x > 0 && double.IsFinite(x);
}
