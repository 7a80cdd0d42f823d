using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Cuda;
using Phi2Native.Determinism;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The launchers of kernels/gelu.cu, kernels/dropout.cu, accumulate (elementwise.cu) and the sum of squares
/// (reduce.cu): bad arguments refused in C#, naming the argument, and the launch shapes and scalar arguments their
/// kernel files document, read off a device that records launches instead of running them.
/// </summary>
[TestFixture, Category("Emulated")]
public class ActivationLauncherTests : LauncherTest
{
    [Test]
    public void NullPointersAreRefusedByName()
    {
        Assert.That(() => GeluKernels.GeluNew(Emulated, DType.F32, DevicePtr.Null, F(8), 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("x"));
        Assert.That(() => GeluKernels.GeluNewBackward(Emulated, DType.F32, F(0), DevicePtr.Null, F(8), 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("x"));
        Assert.That(() => GeluKernels.GeluNewBackward(Emulated, DType.F32, F(0), F(4), DevicePtr.Null, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("dX"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), DevicePtr.Null, F(8), F(16), 2, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("bias"));
        Assert.That(() => GeluKernels.BiasGeluNewBackward(Emulated, DType.F32, F(0), DevicePtr.Null, F(8), F(16), 2, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("pre"));
        Assert.That(() => DropoutKernels.Dropout(Emulated, DType.F32, F(0), DevicePtr.Null, 0.1, 1, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("y"));
        Assert.That(() => DropoutKernels.DropoutBackward(Emulated, DType.F32, DevicePtr.Null, F(0), 0.1, 1, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("dY"));
        Assert.That(() => ElementwiseKernels.Accumulate(Emulated, DType.F32, F(0), DevicePtr.Null, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("y"));
    }

    [Test]
    public void MisalignedPointersAreRefusedByName()
    {
        // A bf16 buffer is 2-byte aligned; dBias is fp32 whatever the dtype, so it must be 4-byte aligned.
        var e = Assert.Throws<ArgumentException>(() => GeluKernels.BiasGeluNewBackward(Emulated, DType.BF16, Bf16Buffer.Pointer, Bf16Buffer.Pointer.Offset(2),
            Bf16Buffer.Pointer.Offset(64), F(0).Offset(2), 2, 4));
        Assert.That(e!.ParamName, Is.EqualTo("dBias"));
        Assert.That(e.Message, Does.Contain("not aligned to 4 bytes"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.BF16, Bf16Buffer.Pointer, Bf16Buffer.Pointer, Bf16Buffer.Pointer.Offset(32), Bf16Buffer.Pointer.Offset(65), 2, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("pre"));
        Assert.That(() => DropoutKernels.Dropout(Emulated, DType.F16, Bf16Buffer.Pointer.Offset(1), Bf16Buffer.Pointer, 0.1, 1, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("x"));
    }

    [Test]
    public void UnsupportedDTypesAreRefusedByName()
    {
        Assert.That(() => ElementwiseKernels.Accumulate(Emulated, DType.BF16, Bf16Buffer.Pointer, Bf16Buffer.Pointer, 4),
            Throws.ArgumentException.With.Message.Contains("accumulate has no BF16 kernel"));
        Assert.That(() => GeluKernels.GeluNew(Emulated, DType.F64, F(0), F(8), 4), Throws.ArgumentException.With.Message.Contains("gelu_new has no F64 kernel"));
        Assert.That(() => DropoutKernels.Dropout(Emulated, DType.I32, F(0), F(8), 0.1, 1, 4), Throws.ArgumentException.With.Message.Contains("dropout has no I32 kernel"));
    }

    [TestCase(1.0)]
    [TestCase(-0.1)]
    [TestCase(double.NaN)]
    [TestCase(1.5)]
    public void DropProbabilitiesOutsideZeroToOneAreRefused(double p)
    {
        Assert.That(() => DropoutKernels.Dropout(Emulated, DType.F32, F(0), F(8), p, 1, 4),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("p"));
        Assert.That(() => DropoutKernels.DropoutBackward(Emulated, DType.F32, F(0), F(8), p, 1, 4),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("p"));
    }

    [Test]
    public void SizesAliasesAndGridCapsAreChecked()
    {
        Assert.That(() => GeluKernels.GeluNew(Emulated, DType.F32, F(0), F(8), 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("n"));
        Assert.That(() => DropoutKernels.Dropout(Emulated, DType.F32, F(0), F(8), 0.1, 1, -1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("n"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), F(0), F(8), F(16), -1, 4), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rows"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), F(0), F(8), F(16), 1, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("channels"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), F(0), F(8), F(8), 1, 4), Throws.ArgumentException.With.Property("ParamName").EqualTo("pre"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), F(0), F(8), F(16), 1, 4, maxRowBlocks: 0),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("maxRowBlocks"));
    }

    [Test]
    public void PartlyOverlappingBuffersAreRefusedInPlaceIsAllowed()
    {
        // In place (the same pointer) is fine for these elementwise kernels; a shifted overlap would race.
        Assert.That(() => GeluKernels.GeluNew(Emulated, DType.F32, F(0), F(1), 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("y").With.Message.Contains("partly overlaps x"));
        Assert.That(() => GeluKernels.GeluNewBackward(Emulated, DType.F32, F(0), F(10), F(12), 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dX").With.Message.Contains("partly overlaps x"));
        Assert.That(() => DropoutKernels.DropoutBackward(Emulated, DType.F32, F(0), F(3), 0.1, 1, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dX").With.Message.Contains("partly overlaps dY"));
        Assert.That(() => DropoutKernels.Dropout(Emulated, DType.F32, F(0), F(3), 0, 1, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("y"), "p = 0 copies, and a partly overlapping copy is refused too");
        Assert.That(() => ElementwiseKernels.Accumulate(Emulated, DType.F32, F(2), F(0), 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("y"));
        Assert.That(() => GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), F(40), F(16), F(20), 2, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("pre").With.Message.Contains("overlaps y"));
        Assert.That(() => GeluKernels.BiasGeluNewBackward(Emulated, DType.F32, F(0), F(16), F(20), DevicePtr.Null, 2, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dX").With.Message.Contains("partly overlaps pre"));
        GeluKernels.GeluNew(Emulated, DType.F32, F(0), F(0), 4);
        DropoutKernels.Dropout(Emulated, DType.F32, F(0), F(0), 0.5, 1, 4);
        ElementwiseKernels.Accumulate(Emulated, DType.F32, F(0), F(0), 4);
        GeluKernels.BiasGeluNew(Emulated, DType.F32, F(0), F(40), F(0), F(16), 2, 4);
        GeluKernels.BiasGeluNewBackward(Emulated, DType.F32, F(0), F(16), F(0), F(48), 2, 4);
    }

    [Test]
    public void NothingToDoLaunchesNothing()
    {
        var device = Recorder();
        DevicePtr p = new(0x10000);
        GeluKernels.BiasGeluNew(device, DType.F32, p, p, p.Offset(64), DevicePtr.Null, 0, 8);
        GeluKernels.BiasGeluNewBackward(device, DType.F32, p, p, DevicePtr.Null, DevicePtr.Null, 4, 8);
        GeluKernels.BiasGeluNewBackward(device, DType.BF16, p, p, p, p, 0, 8);
        // p = 0 in place: every element kept and scaled by 1, so nothing changes.
        DropoutKernels.Dropout(device, DType.F32, p, p, 0, 1, 100);
        DropoutKernels.DropoutBackward(device, DType.BF16, p, p, 0, 1, 100);
        Assert.That(device.Calls, Is.Empty);
    }

    [Test]
    public void DropoutWithPZeroIsACopyAsOnTheCpu()
    {
        var device = Recorder();
        DevicePtr x = new(0x10000), y = new(0x20000);
        DropoutKernels.Dropout(device, DType.BF16, x, y, 0, 1, 100);
        Assert.That(device.Calls, Is.EqualTo(new[] { "copy 200 bytes 0x10000 -> 0x20000" }));
    }

    [Test]
    public void DropoutPassesTheCpuThresholdTheRoundedScaleAndTheWholeSeed()
    {
        var device = Recorder();
        DevicePtr x = new(0x10000), y = new(0x20000);
        const ulong seed = 0xFEDCBA9876543210UL;
        foreach (double p in new[] { 0.1, 0.5, 0.9999999, 1 - 1.0 / (1 << 25), 1e-9 })
        {
            device.Clear();
            DropoutKernels.DropoutBackward(device, DType.F32, x, y, p, seed, 1001);
            var launch = device.Launches.Last();
            Assert.That(launch.Kernel, Is.EqualTo("dropout_backward_f32"));
            Assert.That((launch.Grid, launch.Block), Is.EqualTo((new Dim3(4), new Dim3(256))));
            Assert.That(launch.Scalars, Is.EqualTo(new object[] { DropoutMask.KeepThreshold(p), (float)(1.0 / (1.0 - p)), seed, 1001 }), $"p = {p}");
        }
        Assert.That(DropoutMask.KeepThreshold(1 - 1.0 / (1 << 25)), Is.EqualTo(1u << 24), "p above the last draw keeps nothing");
    }

    [TestCase(4, 80, DType.F32, 2u, 16u)]
    [TestCase(1000, 2560, DType.F32, 40u, 16u)]
    [TestCase(100_000, 10240, DType.BF16, 160u, 8u)]
    [TestCase(3, 7, DType.F16, 1u, 8u)]
    public void BiasGeluBackwardTakes64ColumnsA_BlockAnd32RowLanes_AndNoRowBlocks(int rows, int channels, DType dtype, uint gridX, uint blockX)
    {
        var device = Recorder();
        // Far apart: 100000 x 10240 floats are 4 GB.
        DevicePtr p = new(1UL << 33), bias = new(2UL << 33), q = new(3UL << 33);
        GeluKernels.BiasGeluNewBackward(device, dtype, p, p, p, bias, rows, channels);
        var launch = device.Launches.Single();
        Assert.That(launch.Kernel, Is.EqualTo($"bias_gelu_new_backward_{KernelName.Suffix(dtype)}"));
        // One block per 64 columns, all rows in it (dBias summed in a fixed order): no row blocks.
        Assert.That((launch.Grid, launch.Block, launch.SharedBytes), Is.EqualTo((new Dim3(gridX), new Dim3(blockX, 32), 0)));
    }

    [TestCase(4, 80, DType.F32, 1u, 4u, 32u)]
    [TestCase(1000, 2560, DType.F32, 3u, 1000u, 256u)]
    [TestCase(1000, 2560, DType.BF16, 2u, 1000u, 256u)]
    [TestCase(100_000, 10240, DType.BF16, 5u, 65535u, 256u)]
    [TestCase(3, 7, DType.F32, 1u, 3u, 32u)]
    public void BiasGeluForwardGivesEachThreadA16ByteVectorAcross_AndCappedRowBlocksDown(int rows, int channels, DType dtype, uint gridX, uint gridY, uint block)
    {
        var device = Recorder();
        DevicePtr p = new(1UL << 33), bias = new(2UL << 33), q = new(3UL << 33);
        GeluKernels.BiasGeluNew(device, dtype, p, bias, q, DevicePtr.Null, rows, channels);
        var launch = device.Launches.Single();
        Assert.That((launch.Grid, launch.Block), Is.EqualTo((new Dim3(gridX, gridY), new Dim3(block))));
    }

    // The parameters of the kernels these tests decode: pointers first, then scalars, as the kernel files declare them.
    private static unsafe (int Pointers, Func<nint, object>[] Scalars) Layout(string kernel) => kernel switch
    {
        _ when kernel.StartsWith("dropout", StringComparison.Ordinal) => (2, [a => *(uint*)a, a => *(float*)a, a => *(ulong*)a, a => *(int*)a]),
        _ when kernel.StartsWith("bias_gelu", StringComparison.Ordinal) => (4, [a => *(int*)a, a => *(int*)a]),
        _ => throw new AssertionException($"the test does not know {kernel}'s parameters"),
    };

    private static RecordingDevice Recorder() => new(allowCopies: true, layout: Layout);
}
