using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// The device layer itself, through <see cref="IDeviceApi"/> only: copies through the pinned staging chunks (sizes on
/// either side of a chunk boundary, into the middle of an allocation), a source span reused as soon as the copy
/// returns, device-to-device copies and fills, streams and timing events, calls from threads that never touched the
/// device, a launch opting into more than 48 KiB of dynamic shared memory, and the allocation statistics. On the GPU
/// these exercise CudaDevice's staging, context handling and function attributes; on the emulator the same bodies pin
/// the emulated device to the same contract.
/// </summary>
public static class DeviceLayerChecks
{
    private const int Chunk = PinnedStagingBuffers.DefaultChunkBytes;

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        new("device: copy 1 byte into an allocation", [], device => RoundTrip(device, 1)),
        new("device: copy a staging chunk less 1 byte", [], device => RoundTrip(device, Chunk - 1)),
        new("device: copy a staging chunk and 1 byte", [], device => RoundTrip(device, Chunk + 1)),
        new("device: copy two staging chunks and 77 bytes", [], device => RoundTrip(device, 2 * Chunk + 77)),
        new("device: the source span is free once CopyToDevice returns", [], SourceReusable),
        new("device: events time fills on a created stream", [], EventsTimeWork),
        new("device: calls from fresh threads", ["add_f32"], FreshThreads),
        new("device: launch with 64 KiB of dynamic shared memory", ["add_f32"], LargeDynamicShared),
        new("device: statistics return to the baseline", [], Statistics),
    ];

    private static byte[] Pattern(int bytes, int seed)
    {
        var data = new byte[bytes];
        for (int i = 0; i < bytes; i++) data[i] = (byte)(i * 31 + seed);
        return data;
    }

    // Bytes compare exactly: the result is 0 or "infinitely" wrong, with the first differing offset.
    private static CheckResult SameBytes(string what, ReadOnlySpan<byte> actual, ReadOnlySpan<byte> expected)
    {
        if (actual.Length != expected.Length)
            return new CheckResult(double.PositiveInfinity, double.PositiveInfinity, $"{what}: {actual.Length} bytes, expected {expected.Length}");
        int at = actual.CommonPrefixLength(expected);
        return at == actual.Length
            ? new CheckResult(0, 0, $"{what}: {actual.Length} bytes equal")
            : new CheckResult(Math.Abs(actual[at] - expected[at]), double.PositiveInfinity, $"{what}: byte {at} is 0x{actual[at]:x2}, expected 0x{expected[at]:x2}");
    }

    private static CheckResult Failure(string detail) => new(double.PositiveInfinity, double.PositiveInfinity, detail);

    // 256 bytes of fill on each side of the copied range: a staging chunk written one byte too far, or to the
    // allocation's start instead of the offset, changes them.
    private static CheckResult RoundTrip(IDeviceApi device, int bytes)
    {
        var stream = device.CreateStream();
        DevicePtr p = device.Allocate(bytes + 512);
        try
        {
            byte[] data = Pattern(bytes, seed: bytes);
            device.Fill(p, 0xAB, bytes + 512, stream);
            device.CopyToDevice(p.Offset(256), data, stream);
            var back = new byte[bytes + 512];
            device.CopyToHost(back, p, stream);
            var expected = new byte[bytes + 512];
            Array.Fill(expected, (byte)0xAB);
            data.CopyTo(expected, 256);
            return SameBytes("allocation", back, expected);
        }
        finally
        {
            device.Free(p);
            device.DestroyStream(stream);
        }
    }

    private static CheckResult SourceReusable(IDeviceApi device)
    {
        const int bytes = 3 * (1 << 20) + 5;
        byte[] data = Pattern(bytes, 1), expected = (byte[])data.Clone();
        DevicePtr p = device.Allocate(bytes), q = device.Allocate(bytes);
        try
        {
            device.CopyToDevice(p, data, DeviceStream.Default);
            Array.Fill(data, (byte)0); // must not reach the device: the copy has taken its bytes already
            device.CopyOnDevice(q, p, bytes, DeviceStream.Default);
            var back = new byte[bytes];
            device.CopyToHost(back, q, DeviceStream.Default);
            return SameBytes("copy of the copy", back, expected);
        }
        finally
        {
            device.Free(p);
            device.Free(q);
        }
    }

    private static CheckResult EventsTimeWork(IDeviceApi device)
    {
        var stream = device.CreateStream();
        const long bytes = 64L << 20;
        DevicePtr p = device.Allocate(bytes);
        try
        {
            var start = device.RecordEvent(stream);
            for (int i = 0; i < 4; i++) device.Fill(p, (byte)i, bytes, stream);
            var end = device.RecordEvent(stream);
            float ms = device.ElapsedMilliseconds(start, end);
            device.DestroyEvent(start);
            device.DestroyEvent(end);
            var last = new byte[16];
            device.CopyToHost(last, p.Offset(bytes - 16), stream);
            if (!(ms > 0 && ms < 60_000)) return Failure($"4 fills of 64 MiB timed at {ms} ms");
            return SameBytes($"after 4 fills timed at {ms:F3} ms, the last bytes", last, Enumerable.Repeat((byte)3, 16).ToArray());
        }
        finally
        {
            device.Free(p);
            device.DestroyStream(stream);
        }
    }

    private static CheckResult FreshThreads(IDeviceApi device)
    {
        var results = new CheckResult[4];
        var threads = Enumerable.Range(0, results.Length).Select(t => new Thread(() =>
        {
            try
            {
                int n = 1000 + 37 * t;
                float[] a = TestData.Uniform(n, 10 + t), b = TestData.Uniform(n, 20 + t);
                using var da = DeviceBuffer.Upload(device, Tensors.DType.F32, a);
                using var db = DeviceBuffer.Upload(device, Tensors.DType.F32, b);
                Backends.Cuda.ElementwiseKernels.Add(device, Tensors.DType.F32, da.Pointer, db.Pointer, da.Pointer, n);
                results[t] = CheckResult.CompareBits($"thread {t}: y", da.Download(), [.. a.Zip(b, (x, y) => x + y)]);
            }
            catch (Exception e)
            {
                results[t] = Failure($"thread {t}: {e.GetType().Name}: {e.Message}");
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        return CheckResult.Combine(results);
    }

    // add_f32 ignores dynamic shared memory; what is checked is that a launch asking for more than the default 48 KiB
    // is accepted (the real device must raise the function's attribute first) and still computes.
    private static unsafe CheckResult LargeDynamicShared(IDeviceApi device)
    {
        const int n = 256;
        float[] x = TestData.Uniform(n, 3);
        using var buffer = DeviceBuffer.Upload(device, Tensors.DType.F32, x);
        DevicePtr a = buffer.Pointer, y = buffer.Pointer;
        int count = n;
        nint* args = stackalloc nint[] { (nint)(&a), (nint)(&a), (nint)(&y), (nint)(&count) };
        device.Launch("add_f32", 1, 256, 64 << 10, DeviceStream.Default, new ReadOnlySpan<nint>(args, 4));
        device.Synchronize(DeviceStream.Default);
        return CheckResult.CompareBits("y", buffer.Download(), [.. x.Select(v => v + v)]);
    }

    private static CheckResult Statistics(IDeviceApi device)
    {
        var before = device.Memory;
        DevicePtr p = device.Allocate(1000), q = device.Allocate(3 << 20);
        var during = device.Memory;
        device.Free(q);
        device.Free(p);
        var after = device.Memory;
        var problems = new List<string>();
        if (during.BytesInUse - before.BytesInUse != 1000 + (3 << 20)) problems.Add($"bytes in use grew by {during.BytesInUse - before.BytesInUse}, expected {1000 + (3 << 20)}");
        if (during.LiveAllocations - before.LiveAllocations != 2) problems.Add($"live allocations grew by {during.LiveAllocations - before.LiveAllocations}, expected 2");
        if (during.PeakBytesInUse < during.BytesInUse) problems.Add($"peak {during.PeakBytesInUse} below in use {during.BytesInUse}");
        if (after.BytesInUse != before.BytesInUse || after.LiveAllocations != before.LiveAllocations) problems.Add($"after freeing: {after}, before: {before}");
        if (after.TotalAllocations - before.TotalAllocations != 2) problems.Add($"total allocations grew by {after.TotalAllocations - before.TotalAllocations}, expected 2");
        return problems.Count == 0 ? new CheckResult(0, 0, $"in use {before.BytesInUse} -> {during.BytesInUse} -> {after.BytesInUse}") : Failure(string.Join("; ", problems));
    }
}
