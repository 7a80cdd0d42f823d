using NUnit.Framework;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>Greedy, temperature, top-k and top-p on small logits rows whose distributions are worked out by hand.</summary>
[TestFixture]
public class SamplerTests
{
    // exp of these logits is 1, 2, 4: softmax at temperature 1 is [1/7, 2/7, 4/7].
    private static readonly float[] Powers = [0f, MathF.Log(2f), MathF.Log(4f)];

    private static void Expect(double[] expected, double[] actual)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++) Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-6), $"id {i}");
    }

    [Test]
    public void ArgMaxTakesTheLowestIdOnTies()
    {
        Assert.That(Sampler.ArgMax([1f, 3f, 3f, 2f]), Is.EqualTo(1));
        Assert.That(Sampler.ArgMax([-5f]), Is.EqualTo(0));
        Assert.That(Sampler.ArgMax([float.NegativeInfinity, -1e30f, -1e30f]), Is.EqualTo(1));
    }

    [Test]
    public void TemperatureZeroIsGreedyWhateverTheOtherOptions()
    {
        var options = new SamplingOptions { Temperature = 0, TopK = 3, TopP = 0.1, Seed = 1 };
        Expect([0, 0, 1], Sampler.Distribution(Powers, options));
        var sampler = new Sampler(options);
        for (int i = 0; i < 5; i++) Assert.That(sampler.Next([2f, 7f, 7f]), Is.EqualTo(1));
    }

    [Test]
    public void TemperatureScalesTheLogits()
    {
        Expect([1 / 7.0, 2 / 7.0, 4 / 7.0], Sampler.Distribution(Powers, new SamplingOptions()));
        // T = 2: exp(logit / 2) = 1, sqrt 2, 2.
        double sum = 3 + Math.Sqrt(2);
        Expect([1 / sum, Math.Sqrt(2) / sum, 2 / sum], Sampler.Distribution(Powers, new SamplingOptions { Temperature = 2 }));
        // T = 0.5: exp(2 logit) = 1, 4, 16.
        Expect([1 / 21.0, 4 / 21.0, 16 / 21.0], Sampler.Distribution(Powers, new SamplingOptions { Temperature = 0.5 }));
    }

    [Test]
    public void TopKKeepsTheKMostLikelyAndRenormalizes()
    {
        Expect([0, 1 / 3.0, 2 / 3.0], Sampler.Distribution(Powers, new SamplingOptions { TopK = 2 }));
        Expect([0, 0, 1], Sampler.Distribution(Powers, new SamplingOptions { TopK = 1 }));
        Expect([1 / 7.0, 2 / 7.0, 4 / 7.0], Sampler.Distribution(Powers, new SamplingOptions { TopK = 50 }));
        // Ties at the cut: the lower id is ranked first.
        Expect([0, 1, 0, 0], Sampler.Distribution([1f, 2f, 2f, 0f], new SamplingOptions { TopK = 1 }));
    }

    [Test]
    public void TopPKeepsTheSmallestSetReachingP()
    {
        // Ranked 4/7 = 0.571, then 2/7 (cumulative 0.857), then 1/7 (1).
        Expect([0, 0, 1], Sampler.Distribution(Powers, new SamplingOptions { TopP = 0.5 }));
        Expect([0, 1 / 3.0, 2 / 3.0], Sampler.Distribution(Powers, new SamplingOptions { TopP = 0.6 }));
        Expect([0, 1 / 3.0, 2 / 3.0], Sampler.Distribution(Powers, new SamplingOptions { TopP = 0.85 }));
        Expect([1 / 7.0, 2 / 7.0, 4 / 7.0], Sampler.Distribution(Powers, new SamplingOptions { TopP = 0.9 }));
        Expect([1 / 7.0, 2 / 7.0, 4 / 7.0], Sampler.Distribution(Powers, new SamplingOptions { TopP = 1 }));
        // However small p is, one token stays.
        Expect([0, 0, 1], Sampler.Distribution(Powers, new SamplingOptions { TopP = 1e-12 }));
    }

    [Test]
    public void TopPAppliesAfterTopKOnTheRenormalizedSet()
    {
        // Top-2 gives [0, 1/3, 2/3]; 2/3 >= 0.6 alone.
        Expect([0, 0, 1], Sampler.Distribution(Powers, new SamplingOptions { TopK = 2, TopP = 0.6 }));
        Expect([0, 1 / 3.0, 2 / 3.0], Sampler.Distribution(Powers, new SamplingOptions { TopK = 2, TopP = 0.7 }));
    }

    [Test]
    public void ChooseInvertsTheCumulativeDistribution()
    {
        double[] probabilities = [0.2, 0, 0.8];
        Assert.That(Sampler.Choose(probabilities, 0.0), Is.EqualTo(0));
        Assert.That(Sampler.Choose(probabilities, 0.1999), Is.EqualTo(0));
        Assert.That(Sampler.Choose(probabilities, 0.2), Is.EqualTo(2));      // never the zero-probability id
        Assert.That(Sampler.Choose(probabilities, 0.9999), Is.EqualTo(2));
        Assert.That(Sampler.Choose([0.5, 0.49999], 0.99999), Is.EqualTo(1)); // rounding short of the draw: the last id kept
        Assert.Throws<ArgumentOutOfRangeException>(() => Sampler.Choose(probabilities, 1.0));
    }

    [Test]
    public void TheSameSeedGivesTheSameDrawsAndOthersDiffer()
    {
        float[] logits = Enumerable.Range(0, 50).Select(i => (float)Math.Sin(i)).ToArray();
        int[] Draws(ulong seed)
        {
            var sampler = new Sampler(new SamplingOptions { Temperature = 1.5, Seed = seed });
            return Enumerable.Range(0, 40).Select(_ => sampler.Next(logits)).ToArray();
        }
        Assert.That(Draws(7), Is.EqualTo(Draws(7)));
        Assert.That(Draws(8), Is.Not.EqualTo(Draws(7)));
    }

    [Test]
    public void DrawsFollowTheDistribution()
    {
        var sampler = new Sampler(new SamplingOptions { Seed = 11 });
        var counts = new int[3];
        const int Draws = 20000;
        for (int i = 0; i < Draws; i++) counts[sampler.Next(Powers)]++;
        // Standard error of each frequency is below 0.0035; 0.015 is over 4 of them.
        Assert.That(counts[0] / (double)Draws, Is.EqualTo(1 / 7.0).Within(0.015));
        Assert.That(counts[1] / (double)Draws, Is.EqualTo(2 / 7.0).Within(0.015));
        Assert.That(counts[2] / (double)Draws, Is.EqualTo(4 / 7.0).Within(0.015));
    }

    [TestCase(-0.1, 0, 1.0, "temperature")]
    [TestCase(double.NaN, 0, 1.0, "temperature")]
    [TestCase(double.PositiveInfinity, 0, 1.0, "temperature")]
    [TestCase(1.0, -1, 1.0, "top-k")]
    [TestCase(1.0, 0, 0.0, "top-p")]
    [TestCase(1.0, 0, 1.5, "top-p")]
    [TestCase(1.0, 0, -0.5, "top-p")]
    [TestCase(1.0, 0, double.NaN, "top-p")]
    public void InvalidOptionsNameTheOption(double temperature, int topK, double topP, string option)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP };
        Assert.That(() => new Sampler(options), Throws.InstanceOf<Phi2Exception>().With.Message.Contains(option));
        Assert.That(() => Sampler.Distribution(Powers, options), Throws.InstanceOf<Phi2Exception>().With.Message.Contains(option));
    }

    [Test]
    public void BrokenLogitsAreErrors()
    {
        Assert.That(() => Sampler.ArgMax([1f, float.NaN]), Throws.InstanceOf<Phi2Exception>().With.Message.Contains("NaN"));
        Assert.That(() => Sampler.ArgMax([]), Throws.InstanceOf<Phi2Exception>());
    }
}
