using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Loss;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuCrossEntropyTests
{
    private const int N = 7, V = 37, Ignore = -100;
    // Rows 2 and 5 are masked out.
    private static readonly int[] Targets = [3, 0, Ignore, 36, 17, Ignore, 3];

    /// <summary>Per row: log(sum exp(l - max)) + max - l[target], in double.</summary>
    private static (double[] Lse, double LossSum, int Count) Reference(double[] logits, int[] targets, int rows,
        int vocab, int ignore)
    {
        var lse = new double[rows];
        double loss = 0;
        int count = 0;
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int v = 0; v < vocab; v++) max = Math.Max(max, logits[r * vocab + v]);
            for (int v = 0; v < vocab; v++) sum += Math.Exp(logits[r * vocab + v] - max);
            lse[r] = max + Math.Log(sum);
            if (targets[r] == ignore) continue;
            loss += lse[r] - logits[r * vocab + targets[r]];
            count++;
        }
        return (lse, loss, count);
    }

    [Test]
    public void Forward_MatchesReference_FloatAndDouble()
    {
        double[] logits = Random(N * V, seed: 90, scale: 4);
        var (expectedLse, expectedLoss, expectedCount) = Reference(logits, Targets, N, V, Ignore);
        var lse = new double[N];
        var (loss, count) = CpuCrossEntropy.Forward<double>(logits, Targets, lse, N, V, Ignore);
        Assert.That(count, Is.EqualTo(5).And.EqualTo(expectedCount));
        Assert.That(loss, Is.EqualTo(expectedLoss).Within(1e-12));
        AssertClose("logSumExp", lse, expectedLse, DoubleAtol, DoubleRtol);

        var lseF = new float[N];
        var (lossF, countF) = CpuCrossEntropy.Forward<float>(ToFloat(logits), Targets, lseF, N, V, Ignore);
        Assert.That(countF, Is.EqualTo(5));
        Assert.That(lossF, Is.EqualTo(expectedLoss).Within(1e-4));
        AssertClose("logSumExp(float)", lseF, expectedLse);
    }

    [Test]
    public void Backward_MatchesFiniteDifferences_WithIgnoredRows()
    {
        const double scale = 0.37;
        double[] logits = Random(N * V, seed: 91, scale: 3);
        var lse = new double[N];
        double Objective() => scale * CpuCrossEntropy.Forward<double>(logits, Targets, lse, N, V, Ignore).lossSum;
        Objective();
        double[] dLogits = Random(N * V, seed: 92); // overwritten, ignored rows included
        CpuCrossEntropy.Backward<double>(logits, Targets, lse, scale, dLogits, N, V, Ignore);
        CheckGradient("logits", logits, dLogits, Objective);
        for (int v = 0; v < V; v++)
        {
            Assert.That(dLogits[2 * V + v], Is.EqualTo(0.0), "ignored row 2 is exactly zero");
            Assert.That(dLogits[5 * V + v], Is.EqualTo(0.0), "ignored row 5 is exactly zero");
        }
    }

    [Test]
    public void IgnoreIndexInsideTheVocabulary_IsStillIgnored()
    {
        // Some pipelines mask with a real id (e.g. the pad token); such rows are not counted.
        double[] logits = Random(N * V, seed: 93);
        int[] targets = [3, 0, 0, 36, 17, 0, 3];
        var lse = new double[N];
        var (loss, count) = CpuCrossEntropy.Forward<double>(logits, targets, lse, N, V, ignoreIndex: 0);
        var (_, expectedLoss, _) = Reference(logits, targets, N, V, 0);
        Assert.That(count, Is.EqualTo(4));
        Assert.That(loss, Is.EqualTo(expectedLoss).Within(1e-12));
    }

    [Test]
    public void ManySmallRows_GroupedIntoParallelTasks_MatchReference()
    {
        // 16K-element tasks of 163 rows of 100: two tasks, the second short; every 7th row ignored.
        const int rows = 300, vocab = 100;
        const double scale = 1.0 / 3;
        double[] logits = Random(rows * vocab, seed: 95, scale: 4);
        int[] targets = Enumerable.Range(0, rows).Select(r => r % 7 == 3 ? Ignore : (r * 37) % vocab).ToArray();
        var (expectedLse, expectedLoss, expectedCount) = Reference(logits, targets, rows, vocab, Ignore);
        var expectedGrad = new double[rows * vocab];
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == Ignore) continue;
            for (int v = 0; v < vocab; v++) expectedGrad[r * vocab + v] = scale * Math.Exp(logits[r * vocab + v] - expectedLse[r]);
            expectedGrad[r * vocab + targets[r]] -= scale;
        }

        float[] lf = ToFloat(logits);
        var lseF = new float[rows];
        var (lossF, countF) = CpuCrossEntropy.Forward<float>(lf, targets, lseF, rows, vocab, Ignore);
        Assert.That(countF, Is.EqualTo(expectedCount));
        Assert.That(lossF, Is.EqualTo(expectedLoss).Within(1e-5 * Math.Abs(expectedLoss)));
        AssertClose("logSumExp(float)", lseF, expectedLse);
        var dF = ToFloat(Random(rows * vocab, seed: 96)); // overwritten, ignored rows included
        CpuCrossEntropy.Backward<float>(lf, targets, lseF, scale, dF, rows, vocab, Ignore);
        AssertClose("dLogits(float)", dF, expectedGrad);
    }

    [Test]
    public void LargeLogits_DoNotOverflow_FloatPathParallelSize()
    {
        // A Phi-2-like width with logits of 1e4: exp without the max would be inf in float and double.
        const int rows = 5, vocab = 51200;
        double[] logits = Random(rows * vocab, seed: 94, scale: 5);
        for (int r = 0; r < rows; r++) logits[r * vocab + 1000 + r] = 1e4; // one dominant logit per row
        logits[4 * vocab + 7] = -1e4;
        int[] targets = [1000, 5, Ignore, 1003, 7];
        var (expectedLse, expectedLoss, _) = Reference(logits, targets, rows, vocab, Ignore);

        float[] lf = ToFloat(logits);
        var lseF = new float[rows];
        var (lossF, countF) = CpuCrossEntropy.Forward<float>(lf, targets, lseF, rows, vocab, Ignore);
        Assert.That(countF, Is.EqualTo(4));
        Assert.That(double.IsFinite(lossF), Is.True);
        Assert.That(lossF, Is.EqualTo(expectedLoss).Within(1e-6 * Math.Abs(expectedLoss) + 1e-2));
        AssertClose("logSumExp(float)", lseF, expectedLse, 1e-3, 1e-6);

        var dF = new float[rows * vocab];
        CpuCrossEntropy.Backward<float>(lf, targets, lseF, 0.25, dF, rows, vocab, Ignore);
        Assert.That(dF.All(float.IsFinite), Is.True);
        for (int r = 0; r < rows; r++)
        {
            double rowSum = 0;
            for (int v = 0; v < vocab; v++) rowSum += dF[r * vocab + v];
            Assert.That(rowSum, Is.EqualTo(0).Within(1e-5), $"softmax - onehot sums to zero in row {r}");
        }
        Assert.That(dF[0 * vocab + 1000], Is.EqualTo(0f).Within(1e-6), "target is the argmax: p ~ 1, gradient ~ 0");
        Assert.That(dF[1 * vocab + 1001], Is.EqualTo(0.25f).Within(1e-6), "dominant non-target: scale * p ~ scale");
        Assert.That(dF[4 * vocab + 7], Is.EqualTo(-0.25f), "target far below the max: p = 0 exactly");
    }

    [Test]
    public void BadTarget_ThrowsNamingTheRow()
    {
        var logits = new float[N * V];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            CpuCrossEntropy.Forward<float>(logits, [0, 1, 2, 3, V, 5, 6], new float[N], N, V, Ignore));
        Assert.That(ex!.Message, Does.Contain("row 4"));
        ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            CpuCrossEntropy.Backward<float>(logits, [0, -1, 2, 3, 4, 5, 6], new float[N], 1, new float[N * V], N, V, Ignore));
        Assert.That(ex!.Message, Does.Contain("row 1"));
        var ex2 = Assert.Throws<ArgumentException>(() =>
            CpuCrossEntropy.Backward<float>(logits, Targets, new float[N], 1, new float[N * V - 1], N, V, Ignore));
        Assert.That(ex2!.ParamName, Is.EqualTo("dLogits"));
    }
}
