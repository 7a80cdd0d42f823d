using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="EmulatedDevice"/>: kernels launched through the IDeviceApi seam with device pointers as kernelParams,
/// and the strictness that makes backend bugs fail in CI: NaN-filled fresh memory, bounds-checked copies, guard
/// bands that catch a kernel's out-of-bounds store, use after free, and the allocation statistics.
/// </summary>
[TestFixture, Category("Emulated")]
public unsafe class EmulatedDeviceTests
{
    private static void Upload(IDeviceApi d, DevicePtr p, float[] values) =>
        d.CopyToDevice(p, MemoryMarshal.AsBytes(values.AsSpan()), DeviceStream.Default);

    private static float[] Download(IDeviceApi d, DevicePtr p, int count)
    {
        var values = new float[count];
        d.CopyToHost(MemoryMarshal.AsBytes(values.AsSpan()), p, DeviceStream.Default);
        return values;
    }

    [TestCase(1)]
    [TestCase(255)]
    [TestCase(257)]
    [TestCase(1001)]
    public void AddF32ThroughLaunchMatchesTheCpuForOddSizes(int n)
    {
        using var device = new EmulatedDevice();
        float[] a = Enumerable.Range(0, n).Select(i => i * 0.25f - 7f).ToArray();
        float[] b = Enumerable.Range(0, n).Select(i => MathF.Sin(i)).ToArray();
        DevicePtr da = device.Allocate(n * 4L), db = device.Allocate(n * 4L), dy = device.Allocate(n * 4L);
        Upload(device, da, a);
        Upload(device, db, b);
        int argN = n;
        nint[] args = [(nint)(&da), (nint)(&db), (nint)(&dy), (nint)(&argN)];
        device.Launch("add_f32", (uint)((n + 255) / 256), 256, 0, DeviceStream.Default, args);
        device.Synchronize(DeviceStream.Default);
        float[] y = Download(device, dy, n);
        for (int i = 0; i < n; i++) Assert.That(y[i], Is.EqualTo(a[i] + b[i]), $"element {i}");
    }

    [Test]
    public void FreshMemoryReadsAsNaN()
    {
        using var device = new EmulatedDevice();
        DevicePtr p = device.Allocate(4 * 37);
        Assert.That(Download(device, p, 37), Is.All.NaN);
        Assert.That(p.Address % EmulatedDevice.Alignment, Is.Zero, "aligned for 16-byte vector loads");
    }

    [Test]
    public void ACopyCrossingTheEndOfAnAllocationIsRefusedNamingTheCall()
    {
        using var device = new EmulatedDevice();
        DevicePtr p = device.Allocate(64);
        var e = Assert.Throws<EmulatedDeviceException>(() => device.CopyToDevice(p.Offset(32), new byte[33], DeviceStream.Default));
        Assert.That(e!.Call, Is.EqualTo("CopyToDevice"));
        Assert.That(e.Message, Does.Contain("CopyToDevice").And.Contain("cross the end").And.Contain("by 1 bytes"));
        e = Assert.Throws<EmulatedDeviceException>(() => device.CopyToHost(new byte[65], p, DeviceStream.Default));
        Assert.That(e!.Message, Does.Contain("CopyToHost").And.Contain("cross the end"));
        e = Assert.Throws<EmulatedDeviceException>(() => device.Fill(p, 0, 65, DeviceStream.Default));
        Assert.That(e!.Message, Does.Contain("Fill"));
        // Exactly to the end is fine.
        device.CopyToDevice(p.Offset(32), new byte[32], DeviceStream.Default);
    }

    [Test]
    public void AnAddressInsideNoAllocationIsRefused()
    {
        using var device = new EmulatedDevice();
        DevicePtr p = device.Allocate(64);
        var e = Assert.Throws<EmulatedDeviceException>(() => device.CopyToHost(new byte[4], p.Offset(64), DeviceStream.Default));
        Assert.That(e!.Message, Does.Contain("CopyToHost").And.Contain("inside no live allocation"));
        e = Assert.Throws<EmulatedDeviceException>(() => device.Fill(DevicePtr.Null, 0, 1, DeviceStream.Default));
        Assert.That(e!.Message, Does.Contain("Fill").And.Contain("inside no live allocation"));
    }

    [Test]
    public void AKernelWritingOnePastTheEndFailsTheLaunchNamingTheKernelAndTheAllocation()
    {
        using var device = new EmulatedDevice();
        const int n = 63;
        DevicePtr y = device.Allocate(n * 4L);
        int argN = n;
        nint[] args = [(nint)(&y), (nint)(&argN)];
        var e = Assert.Throws<EmulatedDeviceException>(() => device.Launch("emu_test_write_past_end", 1, 64, 0, DeviceStream.Default, args));
        Assert.That(e!.Kernel, Is.EqualTo("emu_test_write_past_end"));
        Assert.That(e.Message, Does.Contain("Launch").And.Contain("kernel emu_test_write_past_end wrote out of bounds")
            .And.Contain($"of {n * 4} bytes at {y}").And.Contain("offset 0 past its end"));
        // Reported once: the in-bounds part stands, and a correct launch afterwards is not blamed.
        Assert.That(Download(device, y, n), Is.EqualTo(Enumerable.Range(0, n).Select(i => (float)i).ToArray()));
        argN = n - 1;
        Assert.DoesNotThrow(() => device.Launch("emu_test_write_past_end", 1, 64, 0, DeviceStream.Default, args));
        device.Free(y);
    }

    [Test]
    public void AFailedEmulatorLaunchNamesTheCallAndTheKernel()
    {
        using var device = new EmulatedDevice();
        var e = Assert.Throws<EmulatedDeviceException>(() => device.Launch("emu_test_trap", 1, 1, 0, DeviceStream.Default, []));
        Assert.That(e!.Kernel, Is.EqualTo("emu_test_trap"));
        Assert.That(e.Message, Does.StartWith("EmulatedDevice.Launch:").And.Contain("__trap"));
    }

    [Test]
    public void UseAfterFreeIsRefused()
    {
        using var device = new EmulatedDevice();
        DevicePtr p = device.Allocate(128);
        device.Free(p);
        var e = Assert.Throws<EmulatedDeviceException>(() => device.CopyToHost(new byte[4], p.Offset(8), DeviceStream.Default));
        Assert.That(e!.Message, Does.Contain("CopyToHost").And.Contain("use after free"));
        e = Assert.Throws<EmulatedDeviceException>(() => device.Free(p));
        Assert.That(e!.Message, Does.Contain("already freed"));
    }

    [Test]
    public void AKernelWritingThroughADanglingPointerFailsTheLaunch()
    {
        using var device = new EmulatedDevice();
        DevicePtr y = device.Allocate(16 * 4);
        device.Free(y);
        int argN = 7;
        nint[] args = [(nint)(&y), (nint)(&argN)];
        var e = Assert.Throws<EmulatedDeviceException>(() => device.Launch("emu_test_write_past_end", 1, 8, 0, DeviceStream.Default, args));
        Assert.That(e!.Message, Does.Contain(
            $"kernel emu_test_write_past_end, block (0,0,0), thread (0,0,0): wrote to freed memory: byte 0 of freed allocation #1 of 64 bytes at {y}"));
    }

    [Test]
    public void FreeingSomethingNotAllocatedIsRefused()
    {
        using var device = new EmulatedDevice();
        DevicePtr p = device.Allocate(64);
        var e = Assert.Throws<EmulatedDeviceException>(() => device.Free(p.Offset(4)));
        Assert.That(e!.Message, Does.Contain("Free").And.Contain("not its start"));
    }

    [Test]
    public void StatisticsCountBytesAllocationsAndPeak()
    {
        using var device = new EmulatedDevice();
        Assert.That(device.Memory, Is.EqualTo(new DeviceMemoryStatistics(0, 0, 0, 0, 0, 0)));
        DevicePtr a = device.Allocate(100), b = device.Allocate(300);
        Assert.That(device.Memory, Is.EqualTo(new DeviceMemoryStatistics(400, 400, 2, 2, 400, 400)));
        device.Free(a);
        Assert.That(device.Memory, Is.EqualTo(new DeviceMemoryStatistics(300, 400, 1, 2, 300, 400)));
        DevicePtr c = device.Allocate(50);
        Assert.That(device.Memory, Is.EqualTo(new DeviceMemoryStatistics(350, 400, 2, 3, 350, 400)));
        device.Free(b);
        device.Free(c);
        Assert.That(device.Memory, Is.EqualTo(new DeviceMemoryStatistics(0, 400, 0, 3, 0, 400)));
    }

    [Test]
    public void AZeroOrNegativeAllocationIsRefused()
    {
        using var device = new EmulatedDevice();
        Assert.That(Assert.Throws<EmulatedDeviceException>(() => device.Allocate(0))!.Message, Does.Contain("Allocate"));
    }
}
