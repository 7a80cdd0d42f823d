using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;
using Phi2Native.DeviceChecks;

namespace Phi2Native.Tests.Cuda;

/// <summary>What the real device layer does where there is no GPU (as in CI): it says why, in one clear message.</summary>
[TestFixture]
public class CudaDeviceTests
{
    [Test]
    public void OpeningWithoutCudaSaysWhyAndTheRunnerGetsTheSameReason()
    {
        var probe = CudaAvailability.Probe();
        if (probe.IsAvailable) Assert.Ignore("this machine has a CUDA GPU; CudaDeviceGpuTests cover it");
        Assert.That(() => CudaDevice.Open(), Throws.InstanceOf<Phi2Exception>().With.Message.Contains(probe.Reason));
        Assert.That(GpuDevices.TryOpen(out string reason), Is.Null);
        Assert.That(reason, Is.EqualTo(probe.Reason));
    }

    [Test]
    public void OnlyTheRealDeviceCompilesKernels()
    {
        using var emulated = new EmulatedDevice();
        Assert.That(() => GpuDevices.CompileAllKernels(emulated), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("emulated"));
    }
}
