using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="StagedCopy"/>'s chunking and double buffering over a fake device whose copies run as late as possible
/// (only when the host waits for them): a staging buffer touched before its copy finished is caught, and data read
/// back before its copy ran would come out wrong.
/// </summary>
[TestFixture]
public class StagedCopyTests
{
    private const ulong Base = 0x10000;

    /// <summary>Device memory is a byte array at <see cref="Base"/>; queued copies run at <see cref="Wait"/>.</summary>
    private sealed class LateDevice(int chunkBytes, int deviceBytes) : IStagingBuffers
    {
        private readonly byte[][] _host = [new byte[chunkBytes], new byte[chunkBytes]];
        private readonly Action?[] _pending = new Action?[2];
        public readonly byte[] Memory = new byte[deviceBytes];
        public readonly List<string> Log = [];
        public int MostInFlight { get; private set; }

        public int ChunkBytes => chunkBytes;

        public Span<byte> Host(int buffer)
        {
            if (_pending[buffer] is not null) throw new InvalidOperationException($"staging buffer {buffer} touched while its copy is in flight");
            return _host[buffer];
        }

        public void Wait(int buffer)
        {
            _pending[buffer]?.Invoke();
            _pending[buffer] = null;
        }

        public void EnqueueToDevice(int buffer, DevicePtr destination, int bytes, DeviceStream stream)
        {
            Queue(buffer, () => _host[buffer].AsSpan(0, bytes).CopyTo(Memory.AsSpan(Index(destination, bytes), bytes)));
            Log.Add($"H{buffer}:{destination.Address - Base}+{bytes}");
        }

        public void EnqueueToHost(int buffer, DevicePtr source, int bytes, DeviceStream stream)
        {
            Queue(buffer, () => Memory.AsSpan(Index(source, bytes), bytes).CopyTo(_host[buffer]));
            Log.Add($"D{buffer}:{source.Address - Base}+{bytes}");
        }

        private void Queue(int buffer, Action copy)
        {
            if (_pending[buffer] is not null) throw new InvalidOperationException($"copy queued on staging buffer {buffer} before its last one finished");
            _pending[buffer] = copy;
            MostInFlight = Math.Max(MostInFlight, _pending.Count(p => p is not null));
        }

        private int Index(DevicePtr p, int bytes)
        {
            long index = (long)(p.Address - Base);
            if (index < 0 || index + bytes > Memory.Length) throw new InvalidOperationException($"{bytes} bytes at {p} are outside device memory");
            return (int)index;
        }
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(255)]
    [TestCase(256)]
    [TestCase(257)]
    [TestCase(512)]
    [TestCase(513)]
    [TestCase(1000)]
    [TestCase(2049)]
    public void RoundTripsAcrossChunkBoundaries(int bytes)
    {
        var device = new LateDevice(chunkBytes: 256, deviceBytes: 4096);
        byte[] data = [.. Enumerable.Range(0, bytes).Select(i => (byte)(i * 7 + 3))];
        var at = new DevicePtr(Base + 100);

        StagedCopy.ToDevice(device, at, data, default);
        var back = new byte[bytes];
        StagedCopy.ToHost(device, back, at, default);

        Assert.That(back, Is.EqualTo(data));
        Assert.That(device.Memory.AsSpan(0, 100).ToArray(), Is.All.EqualTo(0), "nothing written before the destination");
        Assert.That(device.Memory.AsSpan(100 + bytes).ToArray(), Is.All.EqualTo(0), "nothing written past the end");
        Assert.That(device.MostInFlight, Is.LessThanOrEqualTo(2));
        if (bytes > 256) Assert.That(device.MostInFlight, Is.EqualTo(2), "double buffering keeps two copies in flight");
    }

    [Test]
    public void ChunksAlternateBuffersInOrder()
    {
        var device = new LateDevice(chunkBytes: 256, deviceBytes: 4096);
        StagedCopy.ToDevice(device, new DevicePtr(Base), new byte[600], default);
        Assert.That(device.Log, Is.EqualTo(new[] { "H0:0+256", "H1:256+256", "H0:512+88" }));
        device.Log.Clear();
        StagedCopy.ToHost(device, new byte[600], new DevicePtr(Base), default);
        Assert.That(device.Log, Is.EqualTo(new[] { "D0:0+256", "D1:256+256", "D0:512+88" }));
    }

    [Test]
    public void AReadBackAfterAnUploadWaitsForTheUploadStillUsingTheBuffer()
    {
        // The upload leaves its last chunk in flight; the read-back must not reuse that buffer before it has run.
        var device = new LateDevice(chunkBytes: 256, deviceBytes: 4096);
        byte[] first = [.. Enumerable.Range(0, 300).Select(i => (byte)i)];
        StagedCopy.ToDevice(device, new DevicePtr(Base), first, default);
        byte[] second = [.. Enumerable.Range(0, 300).Select(i => (byte)(255 - i))];
        StagedCopy.ToDevice(device, new DevicePtr(Base + 1000), second, default);
        var back = new byte[300];
        StagedCopy.ToHost(device, back, new DevicePtr(Base), default);
        Assert.That(back, Is.EqualTo(first));
        StagedCopy.ToHost(device, back, new DevicePtr(Base + 1000), default);
        Assert.That(back, Is.EqualTo(second));
    }
}
