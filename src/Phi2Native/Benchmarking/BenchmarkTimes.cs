namespace Phi2Native.Benchmarking;

/// <summary>
/// The measured repetitions of one case in milliseconds, in the order they ran, and their summary: the median (the
/// headline), the extremes and the median absolute deviation (the spread, robust to one disturbed repetition).
/// </summary>
public sealed record BenchmarkTimes
{
    /// <summary>Summarizes <paramref name="milliseconds"/> (at least one).</summary>
    public BenchmarkTimes(IReadOnlyList<double> milliseconds)
    {
        ArgumentNullException.ThrowIfNull(milliseconds);
        if (milliseconds.Count == 0) throw new ArgumentException("at least one repetition is needed", nameof(milliseconds));
        Milliseconds = [.. milliseconds];
        MedianMs = Median(Milliseconds);
        MeanMs = Milliseconds.Average();
        MinMs = Milliseconds.Min();
        MaxMs = Milliseconds.Max();
        MedianAbsoluteDeviationMs = Median([.. Milliseconds.Select(t => Math.Abs(t - MedianMs))]);
    }

    /// <summary>Each measured repetition, in order.</summary>
    public IReadOnlyList<double> Milliseconds { get; }

    /// <summary>The median; of an even count, the mean of the middle two.</summary>
    public double MedianMs { get; }

    /// <summary>The mean.</summary>
    public double MeanMs { get; }

    /// <summary>The fastest repetition.</summary>
    public double MinMs { get; }

    /// <summary>The slowest repetition.</summary>
    public double MaxMs { get; }

    /// <summary>The median of |t - median|: the spread.</summary>
    public double MedianAbsoluteDeviationMs { get; }

    private static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToArray();
        int middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}
