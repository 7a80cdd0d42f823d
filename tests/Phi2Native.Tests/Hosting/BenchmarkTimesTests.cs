using NUnit.Framework;
using Phi2Native.Benchmarking;

namespace Phi2Native.Tests.Hosting;

/// <summary>The statistics of a benchmark's repetitions against values worked out by hand.</summary>
[TestFixture]
public class BenchmarkTimesTests
{
    [Test]
    public void AnOddCountsMedianIsTheMiddleValueAndTheSpreadIsTheMedianAbsoluteDeviation()
    {
        var times = new BenchmarkTimes([12, 10, 40, 11, 13]);
        Assert.That(times.MedianMs, Is.EqualTo(12));
        // |t - 12|: 0, 2, 28, 1, 1 -> sorted 0, 1, 1, 2, 28.
        Assert.That(times.MedianAbsoluteDeviationMs, Is.EqualTo(1));
        Assert.That(times.MeanMs, Is.EqualTo(17.2).Within(1e-12));
        Assert.That((times.MinMs, times.MaxMs), Is.EqualTo((10.0, 40.0)));
        Assert.That(times.Milliseconds, Is.EqualTo(new double[] { 12, 10, 40, 11, 13 }), "kept in the order they ran");
    }

    [Test]
    public void AnEvenCountsMedianIsTheMeanOfTheMiddleTwo()
    {
        var times = new BenchmarkTimes([4, 1, 3, 2]);
        Assert.That(times.MedianMs, Is.EqualTo(2.5));
        // |t - 2.5|: 1.5, 1.5, 0.5, 0.5 -> median 1.
        Assert.That(times.MedianAbsoluteDeviationMs, Is.EqualTo(1));
    }

    [Test]
    public void NoRepetitionIsRefused() => Assert.Throws<ArgumentException>(() => _ = new BenchmarkTimes([]));
}
