using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Support;

/// <summary>
/// Base of the kernel launcher tests: a fresh emulated device per test with small F32, BF16 and I32 buffers whose
/// pointers the argument checks pass around (the I32 one holds 0, 1, 2, ...), freed after the test.
/// </summary>
public abstract class LauncherTest
{
    /// <summary>Elements in the F32 and BF16 buffers; a fixture whose dims need more overrides it.</summary>
    protected virtual int Elements => 64;

    private protected EmulatedDevice Emulated { get; private set; } = null!;
    private protected DeviceBuffer F32Buffer { get; private set; } = null!;
    private protected DeviceBuffer Bf16Buffer { get; private set; } = null!;
    private protected DeviceBuffer I32Buffer { get; private set; } = null!;

    [SetUp]
    public void OpenDevice()
    {
        Emulated = new EmulatedDevice();
        F32Buffer = DeviceBuffer.Upload(Emulated, DType.F32, new float[Elements]);
        Bf16Buffer = DeviceBuffer.Upload(Emulated, DType.BF16, new float[Elements]);
        I32Buffer = DeviceBuffer.Upload(Emulated, Enumerable.Range(0, 16).ToArray());
    }

    [TearDown]
    public void CloseDevice()
    {
        F32Buffer.Dispose();
        Bf16Buffer.Dispose();
        I32Buffer.Dispose();
        Emulated.Dispose();
    }

    /// <summary>The address of F32 element <paramref name="element"/>.</summary>
    private protected DevicePtr F(int element) => F32Buffer.Pointer.Offset(4L * element);
}
