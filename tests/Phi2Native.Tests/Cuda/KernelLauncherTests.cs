using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The launchers of src/Phi2Native/Backends/Cuda refuse bad arguments in C#, naming the argument, before anything
/// reaches a kernel; and they pick the launch shapes their kernel files document.
/// </summary>
[TestFixture, Category("Emulated")]
public class KernelLauncherTests
{
    private EmulatedDevice _device = null!;
    private DeviceBuffer _f32 = null!, _bf16 = null!;

    [SetUp]
    public void Open()
    {
        _device = new EmulatedDevice();
        _f32 = DeviceBuffer.Upload(_device, DType.F32, new float[64]);
        _bf16 = DeviceBuffer.Upload(_device, DType.BF16, new float[64]);
    }

    [TearDown]
    public void Close()
    {
        _f32.Dispose();
        _bf16.Dispose();
        _device.Dispose();
    }

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
        var e = Assert.Throws<ArgumentException>(() => LayerNormKernels.LayerNorm(_device, DType.F16, _f32.Pointer, _f32.Pointer, _f32.Pointer, 1e-5f,
            _f32.Pointer.Offset(128), _f32.Pointer, _f32.Pointer, 1, 8));
        Assert.That(e!.Message, Does.Contain("layernorm has no F16 kernel"));
        Assert.That(() => ElementwiseKernels.Add(_device, DType.I32, _f32.Pointer, _f32.Pointer, _f32.Pointer, 4), Throws.ArgumentException);
    }

    [Test]
    public void NullAndMisalignedPointersAreRefusedByName()
    {
        var e = Assert.Throws<ArgumentNullException>(() => ElementwiseKernels.Add(_device, DType.F32, _f32.Pointer, DevicePtr.Null, _f32.Pointer, 4));
        Assert.That(e!.ParamName, Is.EqualTo("b"));
        var m = Assert.Throws<ArgumentException>(() => ReductionKernels.RowSum(_device, DType.F32, _f32.Pointer.Offset(2), _f32.Pointer, 1, 4));
        Assert.That(m!.ParamName, Is.EqualTo("x"));
        Assert.That(m.Message, Does.Contain("not aligned to 4 bytes"));
        // A bf16 buffer is 2-byte aligned; its fp32 statistics must still be 4-byte aligned.
        Assert.That(() => LayerNormKernels.LayerNorm(_device, DType.BF16, _bf16.Pointer.Offset(2), _bf16.Pointer, _bf16.Pointer, 1e-5f,
            _bf16.Pointer.Offset(64), _f32.Pointer.Offset(2), _f32.Pointer, 1, 8), Throws.ArgumentException.With.Property("ParamName").EqualTo("mean"));
    }

    [Test]
    public void SizesAndEpsAreChecked()
    {
        Assert.That(() => ElementwiseKernels.Scale(_device, DType.F32, _f32.Pointer, _f32.Pointer, 2f, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => ReductionKernels.RowMax(_device, DType.F32, _f32.Pointer, _f32.Pointer, 1, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => LayerNormKernels.LayerNorm(_device, DType.F32, _f32.Pointer, _f32.Pointer, _f32.Pointer, float.NaN,
            _f32.Pointer.Offset(128), _f32.Pointer, _f32.Pointer, 1, 8), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("eps"));
        Assert.That(() => LayerNormKernels.LayerNorm(_device, DType.F32, _f32.Pointer, _f32.Pointer, _f32.Pointer, 1e-5f,
            _f32.Pointer, _f32.Pointer, _f32.Pointer, 1, 8), Throws.ArgumentException.With.Message.Contains("alias"));
    }

    [Test]
    public void LayerNormWithNothingWantedOrNoRowsLaunchesNothing()
    {
        // Any device call fails the test; the addresses are never dereferenced.
        var device = new NoCallsDevice();
        DevicePtr p = new(0x10000);
        LayerNormKernels.LayerNormBackward(device, DType.F32, p, p, p, p, p, DevicePtr.Null, DevicePtr.Null, DevicePtr.Null, 4, 8);
        LayerNormKernels.LayerNormBackward(device, DType.BF16, p, p, p, p, p, p.Offset(64), p, p, 0, 8);
        LayerNormKernels.LayerNorm(device, DType.F32, p, p, p, 1e-5f, p.Offset(64), p, p, 0, 8);
    }

    /// <summary>A device on which every call is a test failure.</summary>
    private sealed class NoCallsDevice : IDeviceApi
    {
        private static Exception Called(string call) => new AssertionException($"the launcher called IDeviceApi.{call}");
        public string Name => "no calls";
        public DeviceMemoryStatistics Memory => throw Called(nameof(Memory));
        public IBlas Blas => throw Called(nameof(Blas));
        public DevicePtr Allocate(long bytes) => throw Called(nameof(Allocate));
        public void Free(DevicePtr pointer) => throw Called(nameof(Free));
        public void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream) => throw Called(nameof(CopyToDevice));
        public void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream) => throw Called(nameof(CopyToHost));
        public void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream) => throw Called(nameof(CopyOnDevice));
        public void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream) => throw Called(nameof(Fill));
        public void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers) =>
            throw Called($"{nameof(Launch)}({kernelName})");
        public void Synchronize(DeviceStream stream) => throw Called(nameof(Synchronize));
        public DeviceStream CreateStream() => throw Called(nameof(CreateStream));
        public void DestroyStream(DeviceStream stream) => throw Called(nameof(DestroyStream));
        public DeviceEvent RecordEvent(DeviceStream stream) => throw Called(nameof(RecordEvent));
        public float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end) => throw Called(nameof(ElapsedMilliseconds));
        public void DestroyEvent(DeviceEvent deviceEvent) => throw Called(nameof(DestroyEvent));
        public void Dispose() { }
    }

    [Test]
    public void ParameterGradientsWiderThanSharedMemoryAreRefused()
    {
        int channels = LayerNormKernels.MaxParameterGradientChannels + 1;
        Assert.That(() => LayerNormKernels.LayerNormBackward(_device, DType.F32, _f32.Pointer, _f32.Pointer, _f32.Pointer, _f32.Pointer, _f32.Pointer,
            DevicePtr.Null, _f32.Pointer, DevicePtr.Null, 1, channels), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("6144"));
    }
}
