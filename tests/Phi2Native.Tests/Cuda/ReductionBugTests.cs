using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// Planted bugs in the row reduction (kernels/emu/test_reduce.cu: row_sum_f32 with block_sum copied in and one line
/// changed) must fail the very comparison the row_sum device checks use, launched with row_sum_f32's shape on the
/// emulated device, while the real kernel passes it. Otherwise those checks could not catch the bug either.
/// </summary>
[TestFixture, Category("Emulated")]
public unsafe class ReductionBugTests
{
    // 1000 columns at 256 threads: eight warps per row, so the per-warp partials cross warps.
    private const int Rows = 3, Cols = 1000;

    private static readonly float[] X = TestData.Uniform(Rows * Cols, seed: 21);

    private static readonly float[] Expected =
        [.. Enumerable.Range(0, Rows).Select(r => (float)X.Skip(r * Cols).Take(Cols).Sum(v => (double)v))];

    private static float[] RowSum(string? plantedKernel)
    {
        using var device = new EmulatedDevice();
        using var dx = DeviceBuffer.Upload(device, DType.F32, X);
        using var dy = DeviceBuffer.Allocate(device, DType.F32, Rows);
        if (plantedKernel is null)
        {
            ReductionKernels.RowSum(device, DType.F32, dx.Pointer, dy.Pointer, Rows, Cols);
        }
        else
        {
            // row_sum_f32's signature and launch shape, as ReductionKernels.RowSum launches it.
            DevicePtr x = dx.Pointer, y = dy.Pointer;
            int rows = Rows, cols = Cols;
            nint[] args = [(nint)(&x), (nint)(&y), (nint)(&rows), (nint)(&cols)];
            device.Launch(plantedKernel, new Dim3(Rows), LaunchShape.RowBlock(Cols), 0, DeviceStream.Default, args);
        }
        return dy.Download();
    }

    private static CheckResult Compare(float[] actual) => Tolerances.Forward(DType.F32).Compare("y", actual, Expected);

    [Test]
    public void TheRealRowSumPasses()
    {
        Assert.That(LaunchShape.RowBlock(Cols), Is.EqualTo(256u), "the bugs below need several warps per block");
        var result = Compare(RowSum(null));
        Assert.That(result.Passed, result.ToString());
    }

    [Test]
    public void AMissingSyncthreadsBeforeReadingThePartialsFails()
    {
        // Warp 0 reads the slots of warps that have not written theirs yet: poisoned shared memory, so NaN.
        float[] y = RowSum("emu_test_row_sum_unsynced");
        var result = Compare(y);
        Assert.That(result.Passed, Is.False, result.ToString());
        Assert.That(y, Has.All.NaN, "every block's thread 0 saw an unwritten partial");
    }

    [Test]
    public void AShuffleFromTheWrongLaneFails()
    {
        // lane ^ (offset - 1) instead of lane ^ offset: some lanes counted twice, the warp's halves never combined.
        float[] y = RowSum("emu_test_row_sum_wrong_lane");
        var result = Compare(y);
        Assert.That(result.Passed, Is.False, result.ToString());
        Assert.That(y.All(float.IsFinite), Is.True, "a plausible-looking wrong number, not a NaN");
    }
}
