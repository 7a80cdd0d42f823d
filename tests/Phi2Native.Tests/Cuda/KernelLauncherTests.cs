using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Cuda;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The kernel launchers (src/Phi2Native.Backends/Ops/*/*Kernels.cs and src/Phi2Native.Backends/Cuda/*Kernels.cs) refuse bad arguments in C#, naming the argument, before anything
/// reaches a kernel; and they pick the launch shapes their kernel files document.
/// </summary>
[TestFixture, Category("Emulated")]
public class KernelLauncherTests : LauncherTest
{
    [Test]
    public void KernelNamesFollowTheConvention()
    {
        Assert.That(KernelName.For("layernorm_backward", DType.BF16, DType.F32, DType.BF16), Is.EqualTo("layernorm_backward_bf16"));
        Assert.That(CastKernels.Name(DType.F32, DType.BF16), Is.EqualTo("cast_f32_bf16"));
        Assert.That(CastKernels.Name(DType.F16, DType.F32), Is.EqualTo("cast_f16_f32"));
        Assert.That(() => CastKernels.Name(DType.BF16, DType.BF16), Throws.ArgumentException.With.Message.Contains("copy"));
        Assert.That(() => KernelName.Suffix(DType.F64), Throws.ArgumentException);
    }

    [TestCase(1, 32u)]
    [TestCase(7, 32u)]
    [TestCase(33, 64u)]
    [TestCase(80, 96u)]
    [TestCase(2560, 256u)]
    public void RowKernelsUseWholeWarpsUpTo256Threads(int columns, uint threads) =>
        Assert.That(LaunchShape.RowBlock(columns), Is.EqualTo(threads));

    [Test]
    public void AnUnsupportedDTypeIsRefusedByName()
    {
        var e = Assert.Throws<ArgumentException>(() => LayerNormKernels.LayerNorm(Emulated, DType.F16, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, 1e-5f,
            F32Buffer.Pointer.Offset(128), F32Buffer.Pointer, F32Buffer.Pointer, 1, 8));
        Assert.That(e!.Message, Does.Contain("layernorm has no F16 kernel"));
        Assert.That(() => ElementwiseKernels.Add(Emulated, DType.I32, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, 4), Throws.ArgumentException);
    }

    [Test]
    public void NullAndMisalignedPointersAreRefusedByName()
    {
        var e = Assert.Throws<ArgumentNullException>(() => ElementwiseKernels.Add(Emulated, DType.F32, F32Buffer.Pointer, DevicePtr.Null, F32Buffer.Pointer, 4));
        Assert.That(e!.ParamName, Is.EqualTo("b"));
        var m = Assert.Throws<ArgumentException>(() => ReductionKernels.RowSum(Emulated, DType.F32, F32Buffer.Pointer.Offset(2), F32Buffer.Pointer, 1, 4));
        Assert.That(m!.ParamName, Is.EqualTo("x"));
        Assert.That(m.Message, Does.Contain("not aligned to 4 bytes"));
        // A bf16 buffer is 2-byte aligned; its fp32 statistics must still be 4-byte aligned.
        Assert.That(() => LayerNormKernels.LayerNorm(Emulated, DType.BF16, Bf16Buffer.Pointer.Offset(2), Bf16Buffer.Pointer, Bf16Buffer.Pointer, 1e-5f,
            Bf16Buffer.Pointer.Offset(64), F32Buffer.Pointer.Offset(2), F32Buffer.Pointer, 1, 8), Throws.ArgumentException.With.Property("ParamName").EqualTo("mean"));
    }

    [Test]
    public void SizesAndEpsAreChecked()
    {
        Assert.That(() => ElementwiseKernels.Scale(Emulated, DType.F32, F32Buffer.Pointer, F32Buffer.Pointer, 2f, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => ReductionKernels.RowMax(Emulated, DType.F32, F32Buffer.Pointer, F32Buffer.Pointer, 1, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => LayerNormKernels.LayerNorm(Emulated, DType.F32, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, float.NaN,
            F32Buffer.Pointer.Offset(128), F32Buffer.Pointer, F32Buffer.Pointer, 1, 8), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("eps"));
        Assert.That(() => LayerNormKernels.LayerNorm(Emulated, DType.F32, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, 1e-5f,
            F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, 1, 8), Throws.ArgumentException.With.Message.Contains("alias"));
    }

    [Test]
    public void LayerNormWithNothingWantedOrNoRowsLaunchesNothing()
    {
        // Any device call fails the test; the addresses are never dereferenced.
        var device = new RecordingDevice(allowLaunches: false);
        DevicePtr p = new(0x10000);
        LayerNormKernels.LayerNormBackward(device, DType.F32, p, p, p, p, p, DevicePtr.Null, DevicePtr.Null, DevicePtr.Null, 4, 8);
        LayerNormKernels.LayerNormBackward(device, DType.BF16, p, p, p, p, p, p.Offset(64), p, p, 0, 8);
        LayerNormKernels.LayerNorm(device, DType.F32, p, p, p, 1e-5f, p.Offset(64), p, p, 0, 8);
    }

    [Test]
    public void LayerNormBackwardAddingToANullDxIsRefused()
    {
        var device = new RecordingDevice(allowLaunches: false);
        DevicePtr p = new(0x10000);
        Assert.That(() => LayerNormKernels.LayerNormBackward(device, DType.F32, p, p, p, p, p, DevicePtr.Null, p.Offset(64), DevicePtr.Null, 4, 8,
            accumulateDx: true), Throws.ArgumentException.With.Property("ParamName").EqualTo("accumulateDx"));
    }

    [Test]
    public void ParameterGradientsWiderThanSharedMemoryAreRefused()
    {
        int channels = LayerNormKernels.MaxParameterGradientChannels + 1;
        Assert.That(() => LayerNormKernels.LayerNormBackward(Emulated, DType.F32, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer, F32Buffer.Pointer,
            DevicePtr.Null, F32Buffer.Pointer, DevicePtr.Null, 1, channels), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("20736"));
    }
}
