using NUnit.Framework;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Backends.Ops.Qkv;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// <see cref="QkvProjectionOp"/> on the emulated device (one GEMM and qkv_split_rotary; three GEMMs into the column blocks
/// when the weights are not one block) against the CPU backend's, which is the three Linears, RotaryOp and KvCacheOp;
/// and <see cref="LinearOp.ForwardAdding"/> (the residual in the GEMM) against Linear + Add.
/// </summary>
[TestFixture, Category("Emulated")]
public class CudaQkvProjectionTests : CudaBackendTestBase
{
    private const int Heads = 2, HeadDim = 6, C = Heads * HeadDim, Batch = 2, Time = 3;

    private (QkvParameters Cpu, QkvParameters Cuda) Parameters(bool fused)
    {
        if (fused)
        {
            var (w, gw) = RandomPair(10, DType.F32, 3 * C, C);
            var (b, gb) = RandomPair(11, DType.F32, 3 * C);
            QkvParameters Views(Tensor weight, Tensor bias) =>
                new([weight.View(0, C, C), weight.View(C * C, C, C), weight.View(2 * C * C, C, C)], [bias.View(0, C), bias.View(C, C), bias.View(2 * C, C)]);
            return (Views(w, b), Views(gw, gb));
        }
        var pairs = Enumerable.Range(0, 3).Select(j => (W: RandomPair(20 + j, DType.F32, C, C), B: RandomPair(30 + j, DType.F32, C))).ToArray();
        return (new([.. pairs.Select(p => p.W.Cpu)], [.. pairs.Select(p => p.B.Cpu)]), new([.. pairs.Select(p => p.W.Cuda)], [.. pairs.Select(p => p.B.Cuda)]));
    }

    [TestCase(true, 4, false)]
    [TestCase(false, 4, true)]
    [TestCase(true, 0, true)]
    [TestCase(true, 6, true)]
    public void ForwardAndBackwardMatchTheCpuBackend(bool fused, int rotaryDim, bool withPositions)
    {
        using var scope = TensorScope.Begin();
        var shape = new QkvShape(Heads, HeadDim, rotaryDim, 500.0);
        var (x, gx) = RandomPair(1, DType.F32, Batch, Time, C);
        var (p, gp) = Parameters(fused);
        Assert.That(gp.WeightsFused && gp.BiasesFused, Is.EqualTo(fused));
        Tensor? positions = withPositions ? Ids(Cpu, [2, 5], Batch) : null, gpositions = withPositions ? Ids(Cuda, [2, 5], Batch) : null;
        var expected = QkvProjectionOp.Forward(x, p, shape, positions, null, null);
        var actual = QkvProjectionOp.Forward(gx, gp, shape, gpositions, null, null);
        Close("q", expected.Q, actual.Q, F32);
        Close("k", expected.K!, actual.K!, F32);
        Close("v", expected.V!, actual.V!, F32);

        // dx starts non-zero (it accumulates); k's and v's weights train, from one buffer (one dW GEMM), and q's bias.
        var (dq, gdq) = RandomPair(2, DType.F32, Batch, Time, Heads, HeadDim);
        var (dk, gdk) = RandomPair(3, DType.F32, Batch, Time, Heads, HeadDim);
        var (dv, gdv) = RandomPair(4, DType.F32, Batch, Time, Heads, HeadDim);
        var (dx, gdx) = RandomPair(5, DType.F32, Batch, Time, C);
        var (dw, gdw) = RandomPair(6, DType.F32, 2 * C, C);
        var (db, gdb) = RandomPair(7, DType.F32, C);
        QkvProjectionOp.Backward(dq, dk, dv, x, p, shape, positions, dx, [null, dw.View(0, C, C), dw.View(C * C, C, C)], [db, null, null]);
        QkvProjectionOp.Backward(gdq, gdk, gdv, gx, gp, shape, gpositions, gdx, [null, gdw.View(0, C, C), gdw.View(C * C, C, C)], [gdb, null, null]);
        Close("dx", dx, gdx, F32);
        Close("dW of k and v", dw, gdw, F32);
        Close("dBias of q", db, gdb, F32);

        // No dk reached the op: its block adds nothing.
        QkvProjectionOp.Backward(dq, null, dv, x, p, shape, positions, dx, [null, null, null], [null, null, null]);
        QkvProjectionOp.Backward(gdq, null, gdv, gx, gp, shape, gpositions, gdx, [null, null, null], [null, null, null]);
        Close("dx without dk", dx, gdx, F32);
    }

    [Test]
    public void TheCachedForwardWritesKAndVIntoTheCachesRows()
    {
        using var scope = TensorScope.Begin();
        var shape = new QkvShape(Heads, HeadDim, 4, 10000.0);
        var (x, gx) = RandomPair(1, DType.F32, Batch, 1, C);
        var (p, gp) = Parameters(fused: true);
        var (keys, gkeys) = RandomPair(8, DType.F32, Batch, 6, Heads, HeadDim);
        var (values, gvalues) = RandomPair(9, DType.F32, Batch, 6, Heads, HeadDim);
        var positions = Ids(Cpu, [0, 5], Batch);
        var gpositions = Ids(Cuda, [0, 5], Batch);
        Close("q", QkvProjectionOp.Cached(x, p, shape, positions, keys, values), QkvProjectionOp.Cached(gx, gp, shape, gpositions, gkeys, gvalues), F32);
        Close("keys", keys, gkeys, F32);
        Close("values", values, gvalues, F32);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void ForwardAddingIsLinearPlusTheResidual(bool inPlace)
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(1, DType.F32, 2, 3, 7);
        var (w, gw) = RandomPair(2, DType.F32, 5, 7);
        var (b, gb) = RandomPair(3, DType.F32, 5);
        var (r, gr) = RandomPair(4, DType.F32, 2, 3, 5);
        var expected = Cpu.Add(LinearOp.Forward(x, w, b), r);
        var before = gr.ToSingleArray();
        var actual = LinearOp.ForwardAdding(gx, gw, gb, gr, inPlace);
        Close("y", expected, actual, F32);
        Assert.That(actual == gr, Is.EqualTo(inPlace), "in place returns the residual itself");
        if (!inPlace) Assert.That(gr.ToSingleArray(), Is.EqualTo(before), "the residual is left as it was");
        TensorAssert.Close("y on the CPU", expected.ToSingleArray(), LinearOp.ForwardAdding(x, w, b, r, inPlace).ToSingleArray(), F32);
    }
}
