using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="CudaDevice"/> on a real GPU, beyond what the device checks (DeviceLayerChecks, run here by
/// GpuDeviceCheckTests) cover through IDeviceApi: staging with small chunks, the caching allocator on the driver,
/// event errors, the over-48-KiB shared memory opt-in and launch errors, NVRTC's log for a broken source, the disk
/// cache across opens, Blas, and two devices on one context. Ignored, with the probe's reason, where there is no GPU;
/// failed where a GPU is present but CUDA cannot use it (<see cref="Support.GpuGate"/>).
/// </summary>
[TestFixture, Category("Gpu"), NonParallelizable]
public class CudaDeviceGpuTests : Support.TemporaryDirectoryTest
{
    private const int Chunk = 64 << 10; // small staging chunks, so modest sizes cross several boundaries
    private CudaDevice _device = null!;

    [OneTimeSetUp]
    public void OpenDevice()
    {
        Support.GpuGate.Require();
        // Held for the whole fixture, so the primary context (and its loaded modules) outlives each test's own devices.
        _device = CudaDevice.Open(0, KernelCacheOptions.Disabled, Chunk);
        TestContext.Progress.WriteLine($"{_device.Name}: {_device.MaxSharedBytesPerBlock} bytes of opt-in shared memory");
    }

    [OneTimeTearDown]
    public void CloseDevice() => _device?.Dispose();

    private CudaDevice OpenWithCacheIn(string folder) =>
        CudaDevice.Open(0, KernelCacheOptions.InDirectory(folder) with { Warning = w => Assert.Fail($"unexpected cache warning: {w}") }, Chunk);

    private static byte[] Pattern(int bytes, int seed) => [.. Enumerable.Range(0, bytes).Select(i => (byte)(i * 31 + seed))];

    [TestCase(1)]
    [TestCase(Chunk - 1)]
    [TestCase(Chunk)]
    [TestCase(Chunk + 1)]
    [TestCase(2 * Chunk)]
    [TestCase(5 * Chunk + 77)]
    public void BytesRoundTripThroughStagingOnAStream(int bytes)
    {
        var stream = _device.CreateStream();
        DevicePtr p = _device.Allocate(bytes + 512);
        try
        {
            byte[] data = Pattern(bytes, seed: bytes);
            _device.Fill(p, 0xAB, bytes + 512, stream);
            _device.CopyToDevice(p.Offset(256), data, stream); // inside the allocation, not at its start
            var back = new byte[bytes + 512];
            _device.CopyToHost(back, p, stream);
            Assert.That(back.AsSpan(256, bytes).ToArray(), Is.EqualTo(data));
            Assert.That(back.AsSpan(0, 256).ToArray(), Is.All.EqualTo(0xAB));
            Assert.That(back.AsSpan(256 + bytes).ToArray(), Is.All.EqualTo(0xAB));
        }
        finally
        {
            _device.Free(p);
            _device.DestroyStream(stream);
        }
    }

    [Test]
    public void TheAllocatorReusesAFreedBlockOnceItsFenceHasPassed()
    {
        using var device = CudaDevice.Open(0, KernelCacheOptions.Disabled);
        DevicePtr a = device.Allocate(1000);
        device.Free(a);
        DevicePtr other = device.Allocate(100); // a different size class; records the fence behind a's free
        device.Synchronize(DeviceStream.Default); // the fence's only stream is idle now
        DevicePtr b = device.Allocate(900);
        Assert.That(b, Is.EqualTo(a), "same 1024-byte block");
        Assert.That(a.Address % 256, Is.Zero);
        var stats = device.Memory;
        Assert.That(stats.CacheHits, Is.EqualTo(1));
        Assert.That(stats.BytesInUse, Is.EqualTo(1000L));
        Assert.That(stats.LiveAllocations, Is.EqualTo(2));
        Assert.That(stats.TotalAllocations, Is.EqualTo(3));
        Assert.That(stats.BytesReserved, Is.EqualTo(1024L + 512));
        device.Free(b);
        device.Free(other);
        Assert.That(device.EmptyCache(), Is.EqualTo(1024L + 512));
        Assert.That(device.Memory.BytesReserved, Is.Zero);
        Assert.That(() => device.Free(b), Throws.ArgumentException);
    }

    [Test]
    public void AnImpossibleAllocationThrowsOutOfMemoryWithTheDevicesNumbers()
    {
        var e = Assert.Throws<DeviceOutOfMemoryException>(() => _device.Allocate(4 * _device.Info.TotalMemoryBytes))!;
        Assert.That(e.DeviceTotalBytes, Is.GreaterThan(0));
        Assert.That(e.Message, Does.Contain(_device.Name));
        TestContext.Progress.WriteLine(e.Message);
        DevicePtr p = _device.Allocate(1 << 20); // and the device still works
        _device.Free(p);
    }

    [Test]
    public void EventsOnAStreamTimeTheWorkBetweenThem()
    {
        var stream = _device.CreateStream();
        const long bytes = 256L << 20;
        DevicePtr p = _device.Allocate(bytes);
        try
        {
            var start = _device.RecordEvent(stream);
            for (int i = 0; i < 8; i++) _device.Fill(p, (byte)i, bytes, stream);
            var end = _device.RecordEvent(stream);
            float ms = _device.ElapsedMilliseconds(start, end);
            TestContext.Progress.WriteLine($"8 fills of 256 MiB: {ms:F3} ms");
            Assert.That(ms, Is.GreaterThan(0f).And.LessThan(10_000f));
            _device.DestroyEvent(start);
            _device.DestroyEvent(end);
            Assert.That(() => _device.ElapsedMilliseconds(start, end), Throws.ArgumentException.With.Property("ParamName").EqualTo("start"));
        }
        finally
        {
            _device.Free(p);
            _device.DestroyStream(stream);
        }
        Assert.That(() => _device.Synchronize(stream), Throws.ArgumentException.With.Property("ParamName").EqualTo("stream"));
    }

    [Test]
    public unsafe void ALaunchAskingForMoreThan48KiBOfSharedMemoryOptsIn()
    {
        // add_f32 ignores dynamic shared memory, but the launch is refused unless the attribute was raised first.
        const int n = 256;
        using var x = DeviceBuffer.Upload(_device, DType.F32, TestData.Uniform(n, 3));
        DevicePtr a = x.Pointer, y = x.Pointer;
        int count = n;
        nint* args = stackalloc nint[] { (nint)(&a), (nint)(&a), (nint)(&y), (nint)(&count) };
        int shared = Math.Min(100 << 10, _device.MaxSharedBytesPerBlock);
        _device.Launch("add_f32", 1, 256, shared, DeviceStream.Default, new ReadOnlySpan<nint>(args, 4));
        _device.Synchronize(DeviceStream.Default);
        Assert.That(() => _device.Launch("add_f32", 1, 2048, 0, DeviceStream.Default, new ReadOnlySpan<nint>(args, 4)),
            Throws.InstanceOf<CudaException>().With.Message.Contains("add_f32").And.Message.Contains("block (2048,1,1)"));
        Assert.That(() => _device.Launch("no_such_kernel", 1, 1, 0, DeviceStream.Default, []),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("kernelName"));
    }

    [Test]
    public unsafe void StaticAndDynamicSharedMemoryCountTogether()
    {
        // transpose_f32 has a 32 x 33 float tile of static shared memory (4224 bytes): 46 KiB of dynamic shared memory
        // is under 48 KiB alone, but not with the tile, so the launch must opt in; and the opt-in limit counts the tile too.
        const int rows = 32, cols = 32;
        using var x = DeviceBuffer.Upload(_device, DType.F32, TestData.Uniform(rows * cols, 4));
        using var y = DeviceBuffer.Allocate(_device, DType.F32, rows * cols);
        DevicePtr px = x.Pointer, py = y.Pointer;
        int r = rows, c = cols;
        nint* args = stackalloc nint[] { (nint)(&px), (nint)(&py), (nint)(&r), (nint)(&c) };
        _device.Launch("transpose_f32", 1, new Dim3(32, 8), 46 << 10, DeviceStream.Default, new ReadOnlySpan<nint>(args, 4));
        _device.Synchronize(DeviceStream.Default);
        Assert.That(() => _device.Launch("transpose_f32", 1, new Dim3(32, 8), _device.MaxSharedBytesPerBlock - 1024, DeviceStream.Default,
            new ReadOnlySpan<nint>(args, 4)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("4224 bytes of static shared memory"));
    }

    [Test]
    public void ACompileErrorComesBackWithNvrtcsLog()
    {
        const string broken = "#include \"common.cuh\"\nPHI2_KERNEL void broken(float* y) { y[0] = undeclared_thing; }\n";
        var compiler = new NvrtcKernelCompiler();
        var e = Assert.Throws<KernelCompileException>(() => compiler.Compile("broken.cu", broken,
            KernelSourceCatalog.Embedded.Headers, KernelCache.CompileOptions(_device.Info.Architecture)))!;
        TestContext.Progress.WriteLine(e.Message);
        Assert.That(e.Log, Does.Contain("undeclared_thing").And.Contain("broken.cu"));
        Assert.That(e.Message, Does.Contain("NVRTC_ERROR_COMPILATION"));
        Assert.That(compiler.Version, Does.StartWith("NVRTC "));
    }

    [Test]
    public void TheSecondOpenReadsTheDiskCache()
    {
        string folder = Path.Combine(Temp, "kernels");
        using (var first = OpenWithCacheIn(folder))
        {
            Assert.That(first.KernelCacheDirectory, Is.EqualTo(folder));
            Assert.That(first.LoadKernelFile("elementwise.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        }
        Assert.That(Directory.GetFiles(folder, "*.cubin"), Has.Length.EqualTo(1));
        using var second = OpenWithCacheIn(folder);
        var image = second.Kernels.GetImage("elementwise.cu");
        Assert.That(image.Origin, Is.EqualTo(KernelImageOrigin.DiskCache));
        TestContext.Progress.WriteLine($"elementwise.cu from disk in {image.Seconds * 1000:F1} ms ({image.Image.Length} bytes)");
        var check = ElementwiseChecks.All[0].Run(second);
        Assert.That(check.Passed, check.ToString());
    }

    [Test]
    public void EveryEmbeddedKernelFileCompilesAndLoads()
    {
        using var device = OpenWithCacheIn(Path.Combine(Temp, "all"));
        var reports = GpuDevices.CompileAllKernels(device);
        foreach (var r in reports) TestContext.Progress.WriteLine($"{r.File}: {(r.Compiled ? "ok" : "FAILED")} in {r.Seconds:F2} s{(r.Log is null ? "" : "\n" + r.Log)}");
        Assert.That(reports.Select(r => r.File), Is.EqualTo(KernelSourceCatalog.Embedded.Files));
        Assert.That(reports.Where(r => !r.Compiled).Select(r => r.File), Is.Empty);
    }

    [Test]
    public void BlasIsMadeOnceAndItsWorkspaceFreedWithTheDevice()
    {
        var device = CudaDevice.Open(0, KernelCacheOptions.Disabled);
        IBlas blas = device.Blas;
        Assert.That(device.Blas, Is.SameAs(blas));
        Assert.That(device.Memory.BytesInUse, Is.EqualTo(CudaBlas.WorkspaceBytes), "cuBLASLt's workspace comes from the device");
        device.Dispose(); // disposes the handles, which free the workspace through the device before it closes
        Assert.That(() => device.Blas, Throws.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void TwoDevicesShareTheContextAndOneClosingLeavesTheOtherWorking()
    {
        var first = CudaDevice.Open(0, KernelCacheOptions.Disabled);
        using var second = CudaDevice.Open(0, KernelCacheOptions.Disabled);
        Assert.That(ElementwiseChecks.All[0].Run(first).Passed);
        first.Dispose();
        Assert.That(() => first.Allocate(1), Throws.InstanceOf<ObjectDisposedException>());
        var check = ElementwiseChecks.All[0].Run(second);
        Assert.That(check.Passed, check.ToString());
        Assert.That(second.Memory.LiveAllocations, Is.Zero);
    }
}
