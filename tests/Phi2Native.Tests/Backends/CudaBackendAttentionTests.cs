using NUnit.Framework;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// Attention on the CUDA backend (kernels/attention.cu through AttentionKernels) against the CPU backend: forward with
/// Tq &lt; Tk and an odd head dim over more than one 32-row tile, each gradient alone and together, bf16, and the
/// cached forms (plain and per row) over caches whose rows past keyTime hold garbage that must not be read.
/// </summary>
[TestFixture, Category("Emulated")]
public class CudaBackendAttentionTests : CudaBackendTestBase
{
    [TestCase(1, 5, 5, 2, 7)]
    [TestCase(2, 3, 37, 2, 30)]
    [TestCase(1, 40, 40, 1, 80)]
    public void AttentionForwardAndBackwardMatchTheCpuBackend(int batch, int queryTime, int keyTime, int heads, int headDim)
    {
        using var scope = TensorScope.Begin();
        var (q, gq) = RandomPair(90, DType.F32, batch, queryTime, heads, headDim);
        var (k, gk) = RandomPair(91, DType.F32, batch, keyTime, heads, headDim);
        var (v, gv) = RandomPair(92, DType.F32, batch, keyTime, heads, headDim);
        var output = AttentionOp.Forward(q, k, v, out var lse);
        var goutput = AttentionOp.Forward(gq, gk, gv, out var glse);
        Close("output", output, goutput, F32);
        Assert.That(glse.DType, Is.EqualTo(DType.F32));
        Close("logSumExp", lse, glse, F32);

        var (dy, gdy) = RandomPair(93, DType.F32, batch, queryTime, heads, headDim);
        var (dq, dk, dv) = (Cpu.Empty(q.Shape, DType.F32), Cpu.Empty(k.Shape, DType.F32), Cpu.Empty(k.Shape, DType.F32));
        var (gdq, gdk, gdv) = (Cuda.Empty(q.Shape, DType.F32), Cuda.Empty(k.Shape, DType.F32), Cuda.Empty(k.Shape, DType.F32));
        AttentionOp.Backward(dy, q, k, v, output, lse, dq, dk, dv);
        AttentionOp.Backward(gdy, gq, gk, gv, goutput, glse, gdq, gdk, gdv);
        var gradient = new Tolerance(1e-5, 1e-4);
        Close("dq", dq, gdq, gradient);
        Close("dk", dk, gdk, gradient);
        Close("dv", dv, gdv, gradient);

        // Each gradient alone: the kernel skips what is null, and what it writes does not depend on the others.
        var onlyDv = Cuda.Empty(k.Shape, DType.F32);
        AttentionOp.Backward(gdy, gq, gk, gv, goutput, glse, null, null, onlyDv);
        Close("dv alone", dv, onlyDv, gradient);
        var onlyDq = Cuda.Empty(q.Shape, DType.F32);
        AttentionOp.Backward(gdy, gq, gk, gv, goutput, glse, onlyDq, null, null);
        Close("dq alone", dq, onlyDq, gradient);
    }

    [Test]
    public void AttentionInBFloat16MatchesTheCpuBackendToBFloat16Rounding()
    {
        using var scope = TensorScope.Begin();
        var (q, gq) = RandomPair(94, DType.BF16, 2, 6, 2, 16);
        var (k, gk) = RandomPair(95, DType.BF16, 2, 9, 2, 16);
        var (v, gv) = RandomPair(96, DType.BF16, 2, 9, 2, 16);
        var output = AttentionOp.Forward(q, k, v, out var lse);
        var goutput = AttentionOp.Forward(gq, gk, gv, out var glse);
        Assert.That(goutput.DType, Is.EqualTo(DType.BF16));
        Close("output bf16", output, goutput, Tolerance.Forward(DType.BF16));
        Close("logSumExp (fp32 from bf16 inputs)", lse, glse, new Tolerance(1e-5, 1e-4));
    }

    [Test]
    public void CachedAttentionReadsOnlyTheFirstKeyTimeRows()
    {
        using var scope = TensorScope.Begin();
        int batch = 2, heads = 2, headDim = 10, capacity = 12;
        var (q, gq) = RandomPair(97, DType.F32, batch, 3, heads, headDim);
        // The cache holds NaN beyond the rows attended: reading one would poison the output.
        var values = Random(batch * capacity * heads * headDim, 98);
        for (int b = 0; b < batch; b++)
            for (int i = 7 * heads * headDim; i < capacity * heads * headDim; i++) values[b * capacity * heads * headDim + i] = float.NaN;
        var (keys, gkeys) = Pair(values, DType.F32, batch, capacity, heads, headDim);
        var (vals, gvals) = Pair([.. values.Select(x => x / 2)], DType.F32, batch, capacity, heads, headDim);
        Close("cached attention", AttentionOp.Cached(q, keys, vals, Ids(Cpu, [7, 7], 2)), AttentionOp.Cached(gq, gkeys, gvals, Ids(Cuda, [7, 7], 2)), F32);

        int[] keyTimes = [3, 7];
        Close("cached attention per row", AttentionOp.Cached(q, keys, vals, Ids(Cpu, keyTimes, 2)),
            AttentionOp.Cached(gq, gkeys, gvals, Ids(Cuda, keyTimes, 2)), F32);
        Assert.That(() => AttentionOp.Cached(q, keys, vals, Ids(Cpu, [13, 7], 2)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("keyTimes"));
        // Key times stay on the device unchecked (the op's contract allows it): a row outside [Tq, Tmax] is NaN, the others exact.
        var bad = AttentionOp.Cached(gq, gkeys, gvals, Ids(Cuda, [2, 7], 2)).ToSingleArray();
        int row = 3 * heads * headDim;
        Assert.That(bad[..row].All(float.IsNaN), "row 0 (key time 2 < Tq 3) is NaN");
        var good = AttentionOp.Cached(q, keys, vals, Ids(Cpu, [3, 7], 2)).ToSingleArray();
        TensorAssert.Close("row 1 beside a bad row", good[row..], bad[row..], F32);
    }

    [Test]
    public void AttentionRefusesShapesThatDoNotFit()
    {
        using var scope = TensorScope.Begin();
        var q = Cuda.Zeros([1, 4, 2, 8], DType.F32);
        var k = Cuda.Zeros([1, 3, 2, 8], DType.F32);
        Assert.That(() => AttentionOp.Forward(q, k, k, out _), Throws.ArgumentException.With.Message.Contains("Tk >= Tq"));
        var kb = Cuda.Zeros([1, 4, 2, 8], DType.BF16);
        Assert.That(() => AttentionOp.Forward(q, kb, kb, out _), Throws.ArgumentException.With.Property("ParamName").EqualTo("k"));
        var cpuK = Cpu.Zeros([1, 4, 2, 8], DType.F32);
        Assert.That(() => AttentionOp.Forward(q, cpuK, cpuK, out _), Throws.ArgumentException.With.Message.Contains("on another backend"));
    }
}
