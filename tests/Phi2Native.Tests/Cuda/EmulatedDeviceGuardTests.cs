using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="EmulatedDevice"/>'s guard pages and libphi2emu's fault handler: a kernel reading past the end of an
/// allocation, before its start, from freed memory or through a null pointer fails its launch naming the kernel,
/// the thread, the allocation and the offset (planted bug: emu_test_read_shifted, y[i] = x[i + shift]); correct
/// kernels are unaffected; and the .NET runtime's own faults (NullReferenceException) still reach it.
/// </summary>
[TestFixture, Category("Emulated")]
public unsafe class EmulatedDeviceGuardTests
{
    private const string Shifted = "emu_test_read_shifted";

    private static void Upload(IDeviceApi d, DevicePtr p, float[] values) =>
        d.CopyToDevice(p, MemoryMarshal.AsBytes(values.AsSpan()), DeviceStream.Default);

    private static float[] Download(IDeviceApi d, DevicePtr p, int count)
    {
        var values = new float[count];
        d.CopyToHost(MemoryMarshal.AsBytes(values.AsSpan()), p, DeviceStream.Default);
        return values;
    }

    private static float[] Ramp(int n) => Enumerable.Range(0, n).Select(i => i + 0.5f).ToArray();

    // y[i] = x[i + shift] for i < n, 256 threads a block.
    private static void LaunchShifted(EmulatedDevice device, DevicePtr x, DevicePtr y, int n, int shift)
    {
        int argN = n, argShift = shift;
        nint[] args = [(nint)(&x), (nint)(&y), (nint)(&argN), (nint)(&argShift)];
        device.Launch(Shifted, (uint)((n + 255) / 256), 256, 0, DeviceStream.Default, args);
    }

    [Test]
    public void ReadingOnePastTheEndFailsTheLaunchNamingKernelThreadAllocationAndOffset()
    {
        using var device = new EmulatedDevice();
        const int n = 1000; // 4000 bytes: a multiple of 16, so the allocation ends right at its guard page
        DevicePtr x = device.Allocate(n * 4L), y = device.Allocate(n * 4L);
        Upload(device, x, Ramp(n));
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, n, 1));
        Assert.That(e!.Kernel, Is.EqualTo(Shifted));
        // Thread 231 of block 3 is i = 999, the first to read x[1000].
        Assert.That(e.Message, Does.StartWith("EmulatedDevice.Launch: ").And.Contain(
            $"kernel {Shifted}, block (3,0,0), thread (231,0,0): read out of bounds: byte 4000 (0 past the end) of allocation #1 of 4000 bytes at {x}"));
    }

    [Test]
    public void ReadingBeforeTheStartFails()
    {
        using var device = new EmulatedDevice();
        // 4096 bytes fill whole pages: the start is right after the leading guard page, so x[-1] faults.
        const int n = 1024;
        DevicePtr x = device.Allocate(n * 4L), y = device.Allocate(n * 4L);
        Upload(device, x, Ramp(n));
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, n, -1));
        Assert.That(e!.Message, Does.Contain(
            $"kernel {Shifted}, block (0,0,0), thread (0,0,0): read out of bounds: byte -4 (4 before the start) of allocation #1 of 4096 bytes at {x}"));

        // 4000 bytes leave a 96-byte gap after the leading guard page: a read reaching past it faults too...
        DevicePtr x2 = device.Allocate(1000 * 4L);
        e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x2, y, 1000, -25));
        Assert.That(e!.Message, Does.Contain($"read out of bounds: byte -100 (100 before the start) of allocation #3 of 4000 bytes at {x2}"));
    }

    [Test]
    public void ReadsOfTheGuardBytesThatNoPageCoversAreNaN()
    {
        using var device = new EmulatedDevice();
        // 1001 floats round up to 4016 bytes: x[1001..1003] lie before the guard page, x[-1..-24] in the gap after
        // the leading one. Loads there cannot fault; they read the guard pattern, a NaN, so the bug still shows.
        const int n = 1001;
        float[] host = Ramp(n);
        DevicePtr x = device.Allocate(n * 4L), y = device.Allocate(n * 4L);
        Upload(device, x, host);
        LaunchShifted(device, x, y, n, 1);
        float[] past = Download(device, y, n);
        Assert.That(past.Take(n - 1), Is.EqualTo(host.Skip(1)));
        Assert.That(float.IsNaN(past[n - 1]), Is.True, "x[n] reads the guard pattern");
        LaunchShifted(device, x, y, n, -1);
        float[] before = Download(device, y, n);
        Assert.That(float.IsNaN(before[0]), Is.True, "x[-1] reads the guard pattern");
        Assert.That(before.Skip(1), Is.EqualTo(host.Take(n - 1)));
        // Past the slack the guard page catches it.
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, n, 4));
        Assert.That(e!.Message, Does.Contain("read out of bounds: byte 4016 (12 past the end) of allocation #1 of 4004 bytes"));
    }

    [Test]
    public void ReadingFreedMemoryFailsTheLaunch()
    {
        using var device = new EmulatedDevice();
        const int n = 300;
        DevicePtr x = device.Allocate(n * 4L), y = device.Allocate(n * 4L);
        Upload(device, x, Ramp(n));
        device.Free(x);
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, n, 0));
        Assert.That(e!.Message, Does.Contain(
            $"kernel {Shifted}, block (0,0,0), thread (0,0,0): read freed memory: byte 0 of freed allocation #1 of 1200 bytes at {x}"));
        // Copies keep their own message.
        var copy = Assert.Throws<EmulatedDeviceException>(() => Download(device, x, 1));
        Assert.That(copy!.Message, Does.Contain("CopyToHost").And.Contain("use after free"));
    }

    [Test]
    public void AKernelReadingThroughANullPointerFailsTheLaunchInsteadOfTheProcess()
    {
        using var device = new EmulatedDevice();
        DevicePtr y = device.Allocate(64 * 4L);
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, DevicePtr.Null, y, 64, 0));
        Assert.That(e!.Message, Does.Contain($"kernel {Shifted}, block (0,0,0), thread (0,0,0): read address 0x0, which is in no allocation"));
    }

    [Test]
    public void AStorePastTheSlackFaultsAtTheGuardPage()
    {
        using var device = new EmulatedDevice();
        // 64 floats are 256 bytes, a multiple of 16: y[64] is the first byte of the guard page.
        DevicePtr y = device.Allocate(64 * 4L);
        int argN = 64;
        nint[] args = [(nint)(&y), (nint)(&argN)];
        var e = Assert.Throws<EmulatedDeviceException>(() => device.Launch("emu_test_write_past_end", 1, 65, 0, DeviceStream.Default, args));
        Assert.That(e!.Message, Does.Contain(
            $"block (0,0,0), thread (64,0,0): wrote out of bounds: byte 256 (0 past the end) of allocation #1 of 256 bytes at {y}"));
    }

    [TestCase(1, 0)]
    [TestCase(1001, 0)]
    [TestCase(1001, 1)]
    [TestCase(4099, 3)]
    public void CorrectKernelsOverOddSizesPass(int size, int shift)
    {
        // Reading up to the very last element - the one next to the guard page - is fine.
        using var device = new EmulatedDevice();
        float[] host = Ramp(size);
        int n = size - shift;
        DevicePtr x = device.Allocate(size * 4L), y = device.Allocate(n * 4L);
        Upload(device, x, host);
        LaunchShifted(device, x, y, n, shift);
        Assert.That(Download(device, y, n), Is.EqualTo(host.Skip(shift).ToArray()));
        device.Free(x);
        device.Free(y);
    }

    [Test]
    public void AfterAFailedReadTheDeviceKeepsWorkingAndTheGuardsStayArmed()
    {
        using var device = new EmulatedDevice();
        const int n = 512;
        float[] host = Ramp(n);
        DevicePtr x = device.Allocate(n * 4L), y = device.Allocate(n * 4L);
        Upload(device, x, host);
        for (int round = 0; round < 3; round++)
        {
            Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, n, 1), $"round {round}: over-read caught");
            LaunchShifted(device, x, y, n, 0);
            Assert.That(Download(device, y, n), Is.EqualTo(host), $"round {round}: a correct launch after a failed one");
        }
        // Other allocations and frees still work, and a later allocation is guarded as well.
        DevicePtr z = device.Allocate(n * 4L);
        Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, z, y, n, 1));
        device.Free(z);
        device.Free(x);
        device.Free(y);
    }

    [Test]
    public void DevicesOnSeveralThreadsCatchTheirOwnFaults()
    {
        // Launches are serialized process-wide; each thread's faults must be told apart and blamed on its kernel.
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
        {
            using var device = new EmulatedDevice();
            int n = 300 + t;
            float[] host = Ramp(n);
            for (int round = 0; round < 5; round++)
            {
                DevicePtr x = device.Allocate(n * 4L), y = device.Allocate(n * 4L);
                Upload(device, x, host);
                LaunchShifted(device, x, y, n, 0);
                Assert.That(Download(device, y, n), Is.EqualTo(host));
                var e = Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, n, 4));
                Assert.That(e!.Message, Does.Contain($"at {x}"));
                device.Free(x);
                device.Free(y);
            }
        });
    }

    private sealed class Holder
    {
        public int Value = 42;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int ReadValue(Holder? h) => h!.Value;

    [Test]
    public void NullReferenceExceptionStillWorksOnceTheFaultHandlerIsInstalled()
    {
        // The handler is installed by the first launch or allocation; make sure it is, and that it is catching.
        using (var device = new EmulatedDevice())
        {
            DevicePtr x = device.Allocate(16 * 4L), y = device.Allocate(16 * 4L);
            Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, y, 16, 1));
        }
        // The JIT's implicit null check is a hardware fault: the SIGSEGV reaches libphi2emu's handler first, which
        // must hand it to the runtime's, on this thread and on another.
        Assert.Throws<NullReferenceException>(() => ReadValue(null));
        Assert.That(ReadValue(new Holder()), Is.EqualTo(42));
        Exception? onOtherThread = Task.Run(() =>
        {
            try { return ReadValue(null) == 0 ? null : new Exception("no exception"); }
            catch (Exception e) { return e; }
        }).Result;
        Assert.That(onOtherThread, Is.InstanceOf<NullReferenceException>());
    }

    private const string SharedNeighbour = "emu_test_dynamic_shared_neighbour";

    // y[i] = s[t + 1] (or s[(t + 1) % blockDim.x] with wrap) over dynamic shared memory of `sharedFloats` floats.
    private static void LaunchSharedNeighbour(EmulatedDevice device, DevicePtr y, uint blocks, uint threads, int sharedFloats, bool wrap)
    {
        int argWrap = wrap ? 1 : 0;
        nint[] args = [(nint)(&y), (nint)(&argWrap)];
        device.Launch(SharedNeighbour, blocks, threads, sharedFloats * sizeof(float), DeviceStream.Default, args);
    }

    [Test]
    public void ReadingDynamicSharedMemoryPastItsLaunchedSizeFailsTheLaunch()
    {
        using var device = new EmulatedDevice();
        DevicePtr y = device.Allocate(2 * 1024 * 4L);
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchSharedNeighbour(device, y, 2, 1024, 1024, wrap: false));
        Assert.That(e!.Kernel, Is.EqualTo(SharedNeighbour));
        Assert.That(e.Message, Does.Contain(
            $"kernel {SharedNeighbour}, block (0,0,0), thread (1023,0,0): read dynamic shared memory out of bounds: byte 4096 of 4096 (launched with 4096 bytes)"));
        device.Free(y);
    }

    [Test]
    public void DynamicSharedMemoryIsBoundedAtItsSizeRoundedUpTo16()
    {
        using var device = new EmulatedDevice();
        DevicePtr y = device.Allocate(64 * 4L);
        // 33 floats = 132 bytes, mapped as 144: s[33..35] lie in the rounding and go unnoticed (as the GPU's
        // allocation granularity would), s[36] - read by the last of 36 threads - is the first to fault.
        var e = Assert.Throws<EmulatedDeviceException>(() => LaunchSharedNeighbour(device, y, 1, 36, 33, wrap: false));
        Assert.That(e!.Message, Does.Contain("thread (35,0,0): read dynamic shared memory out of bounds: byte 144 of 144 (launched with 132 bytes)"));
        device.Free(y);
    }

    [Test]
    public void AKernelUsingExactlyItsDynamicSharedSizePassesAndTheDeviceWorksAfterAFailure()
    {
        using var device = new EmulatedDevice();
        DevicePtr y = device.Allocate(4 * 256 * 4L);
        foreach (uint threads in new uint[] { 256, 32, 4, 256 }) // multiples of 4 floats: no rounding slack; shrinking and growing reuse or remap the buffer
        {
            Assert.Throws<EmulatedDeviceException>(() => LaunchSharedNeighbour(device, y, 4, threads, (int)threads, wrap: false), $"{threads} threads");
            LaunchSharedNeighbour(device, y, 4, threads, (int)threads, wrap: true);
            float[] expected = Enumerable.Range(0, 4 * (int)threads).Select(i => (float)(i / threads * threads + (i % threads + 1) % threads)).ToArray();
            Assert.That(Download(device, y, 4 * (int)threads), Is.EqualTo(expected), $"{threads} threads");
        }
        // Larger dynamic shared memory than before, then ordinary launches and guards still work.
        LaunchSharedNeighbour(device, y, 1, 256, 48 * 1024, wrap: false);
        DevicePtr x = device.Allocate(512 * 4L), z = device.Allocate(512 * 4L);
        Upload(device, x, Ramp(512));
        LaunchShifted(device, x, z, 512, 0);
        Assert.That(Download(device, z, 512), Is.EqualTo(Ramp(512)));
        Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, z, 512, 1));
        device.Free(x);
        device.Free(z);
        device.Free(y);
    }

    [Test]
    public void AThreadOverflowingItsStackFailsTheLaunchAndTheDeviceKeepsWorking()
    {
        using var device = new EmulatedDevice();
        DevicePtr y = device.Allocate(2 * 64 * 4L);
        for (int round = 0; round < 2; round++)
        {
            int argN = 0;
            nint[] args = [(nint)(&y), (nint)(&argN)];
            var e = Assert.Throws<EmulatedDeviceException>(() => device.Launch("emu_test_stack_overflow", 2, 64, 0, DeviceStream.Default, args));
            Assert.That(e!.Kernel, Is.EqualTo("emu_test_stack_overflow"));
            Assert.That(e.Message, Does.Contain("kernel emu_test_stack_overflow, block (0,0,0), thread (0,0,0): stack overflow in a GPU thread: " +
                "its locals and calls need more than the emulator's 256 KiB stack per thread"));
            // The neighbouring fibers' stacks were not overwritten, and later launches (more threads too) run.
            DevicePtr x = device.Allocate(1000 * 4L), z = device.Allocate(1000 * 4L);
            Upload(device, x, Ramp(1000));
            LaunchShifted(device, x, z, 1000, 0);
            Assert.That(Download(device, z, 1000), Is.EqualTo(Ramp(1000)), $"round {round}");
            Assert.Throws<EmulatedDeviceException>(() => LaunchShifted(device, x, z, 1000, 1));
            device.Free(x);
            device.Free(z);
        }
        device.Free(y);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct StackT { public nint Sp; public int Flags; public nuint Size; }

    [DllImport("libc", SetLastError = true)]
    private static extern int sigaltstack(StackT* ss, StackT* old);

    [Test]
    public void AStackOverflowOnAFreshManagedThreadIsCaughtAndItsAlternateSignalStackLeftAlone()
    {
        // The handler can run after a stack overflow only on an alternate signal stack: the runtime gives its threads
        // one (the emulator lends one to a launching thread without, e.g. a native thread), and a launch leaves it be.
        string? message = null;
        StackT before = default, after = default;
        var thread = new Thread(() =>
        {
            using var device = new EmulatedDevice();
            DevicePtr y = device.Allocate(32 * 4L);
            int argN = 0;
            nint[] args = [(nint)(&y), (nint)(&argN)];
            StackT b, a;
            sigaltstack(null, &b);
            try { device.Launch("emu_test_stack_overflow", 1, 32, 0, DeviceStream.Default, args); }
            catch (EmulatedDeviceException e) { message = e.Message; }
            sigaltstack(null, &a);
            before = b;
            after = a;
            device.Free(y);
        });
        thread.Start();
        thread.Join();
        Assert.That(message, Does.Contain("stack overflow in a GPU thread"));
        TestContext.Out.WriteLine($"the runtime's alternate signal stack: {(before.Flags & 2) == 0} (ss_flags {before.Flags}, {before.Size} bytes)");
        Assert.That((after.Sp, after.Flags, after.Size), Is.EqualTo((before.Sp, before.Flags, before.Size)));
    }
}
