using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Embeddings;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuEmbeddingTests
{
    private const int V = 11, C = 37;
    // Repeated ids (3 three times, 0 twice) so backward must accumulate, not overwrite.
    private static readonly int[] Ids = [3, 0, 10, 3, 7, 0, 3];

    [Test]
    public void Forward_GathersRows_FloatAndDouble()
    {
        double[] weight = Random(V * C, seed: 1);
        var expected = new double[Ids.Length * C];
        for (int n = 0; n < Ids.Length; n++)
            for (int c = 0; c < C; c++) expected[n * C + c] = weight[Ids[n] * C + c];

        var y = new double[Ids.Length * C];
        CpuEmbedding.Forward<double>(weight, Ids, y, V, C);
        AssertClose("output", y, expected, 0, 0);

        var yf = new float[Ids.Length * C];
        CpuEmbedding.Forward<float>(ToFloat(weight), Ids, yf, V, C);
        AssertClose("output(float)", yf, expected);
    }

    [Test]
    public void Backward_MatchesFiniteDifferences_WithRepeatedIds()
    {
        double[] weight = Random(V * C, seed: 2);
        double[] r = Random(Ids.Length * C, seed: 3);
        var y = new double[Ids.Length * C];
        double Objective()
        {
            CpuEmbedding.Forward<double>(weight, Ids, y, V, C);
            return Dot(y, r);
        }

        // Start from a non-zero gradient to see that backward accumulates (+=).
        double[] initial = Random(V * C, seed: 4);
        var dWeight = (double[])initial.Clone();
        CpuEmbedding.Backward<double>(r, Ids, dWeight, V, C);
        for (int i = 0; i < dWeight.Length; i++) dWeight[i] -= initial[i];
        CheckGradient("weight", weight, dWeight, Objective);
    }

    [Test]
    public void Backward_IsDeterministicAcrossThreadingAndMatchesSerialSum()
    {
        // Large enough to go multi-threaded (N*C >= the parallel threshold), with many repeats.
        const int vocab = 50, channels = 1000, rows = 300;
        var ids = new int[rows];
        var rng = new Random(5);
        for (int n = 0; n < rows; n++) ids[n] = rng.Next(vocab);
        float[] dOut = ToFloat(Random(rows * channels, seed: 6));

        var first = new float[vocab * channels];
        CpuEmbedding.Backward<float>(dOut, ids, first, vocab, channels);
        var serial = new float[vocab * channels];
        for (int n = 0; n < rows; n++)
            for (int c = 0; c < channels; c++) serial[ids[n] * channels + c] += dOut[n * channels + c];
        for (int repeat = 0; repeat < 3; repeat++)
        {
            var again = new float[vocab * channels];
            CpuEmbedding.Backward<float>(dOut, ids, again, vocab, channels);
            Assert.That(again, Is.EqualTo(first).AsCollection, "run-to-run");
        }
        Assert.That(first, Is.EqualTo(serial).AsCollection, "bitwise equal to the in-order serial sum");
    }

    [Test]
    public void IdOutOfRange_ThrowsNamingThePosition()
    {
        var weight = new float[V * C];
        var output = new float[3 * C];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => CpuEmbedding.Forward<float>(weight, [1, 2, V], output, V, C));
        Assert.That(ex!.Message, Does.Contain("ids[2]"));
        ex = Assert.Throws<ArgumentOutOfRangeException>(() => CpuEmbedding.Backward<float>(output, [1, -1, 0], weight, V, C));
        Assert.That(ex!.Message, Does.Contain("ids[1]"));
    }

    [Test]
    public void WrongLength_ThrowsArgumentExceptionNamingTheSpan()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            CpuEmbedding.Forward<float>(new float[V * C], [1, 2], new float[C], V, C));
        Assert.That(ex!.ParamName, Is.EqualTo("output"));
        ex = Assert.Throws<ArgumentException>(() =>
            CpuEmbedding.Backward<float>(new float[2 * C], [1, 2], new float[V * C - 1], V, C));
        Assert.That(ex!.ParamName, Is.EqualTo("dWeight"));
    }
}
