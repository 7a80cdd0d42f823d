using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends;

/// <summary>The CPU caching allocator: reuse, accounting, the cache cap, rounding.</summary>
[TestFixture]
public class CpuMemoryPoolTests
{
    [Test]
    public unsafe void FreedBlocksAreReusedAndAccounted()
    {
        using var backend = new CpuBackend();
        var first = backend.Zeros([1000, 1000], DType.F32);
        void* pointer = ((CpuStorage)first.Storage).Pointer;
        long capacity = backend.Memory.BytesInUse;
        Assert.That(capacity, Is.GreaterThanOrEqualTo(4_000_000));
        first.Dispose();
        Assert.That(backend.Memory, Is.EqualTo(new MemoryStatistics(0, capacity, capacity)));
        // A slightly different size that rounds to the same bucket gets the same block back.
        var second = backend.Empty([999, 1001], DType.F32);
        Assert.That((nint)((CpuStorage)second.Storage).Pointer, Is.EqualTo((nint)pointer));
        Assert.That(backend.Memory.BytesCached, Is.Zero);
        second.Dispose();
        backend.ReleaseCachedMemory();
        Assert.That(backend.Memory.BytesCached, Is.Zero);
        backend.ResetPeakMemory();
        Assert.That(backend.Memory.PeakBytesInUse, Is.Zero);
    }

    [Test]
    public void CacheNeverExceedsItsCap()
    {
        using var backend = new CpuBackend(maxCachedBytes: 1 << 20);
        var tensors = Enumerable.Range(0, 8).Select(_ => backend.Empty([64 * 1024], DType.F32)).ToList(); // 256 KiB each
        foreach (var t in tensors) t.Dispose();
        Assert.That(backend.Memory.BytesCached, Is.EqualTo(1 << 20));
        Assert.That(backend.Memory.BytesInUse, Is.Zero);
    }

    [Test]
    public void ReusedMemoryIsStillZeroedOrPoisonedAsAsked()
    {
        using var backend = new CpuBackend(poisonNewMemory: true);
        var ones = backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Enumerable.Repeat(1f, 300).ToArray().AsSpan()), DType.F32, [300], DType.F32);
        ones.Dispose();
        using var zeros = backend.Zeros([300], DType.F32);
        Assert.That(zeros.ToArray<float>(), Is.All.EqualTo(0f));
        zeros.Dispose();
        using var poisoned = backend.Empty([300], DType.F32);
        Assert.That(poisoned.ToArray<float>(), Is.All.NaN);
    }

    [TestCase(0L, 64L)]
    [TestCase(64L, 64L)]
    [TestCase(65L, 128L)]
    [TestCase(1000L, 1024L)]
    [TestCase(1025L, 1280L)]
    [TestCase(4_000_000L, 4_194_304L)]
    public void SizesRoundUpWithAtMostAQuarterOr64BytesOfSlack(long bytes, long expected)
    {
        long rounded = CpuMemoryPool.RoundUp(bytes);
        Assert.That(rounded, Is.EqualTo(expected));
        Assert.That(rounded, Is.LessThanOrEqualTo(Math.Max(64, Math.Max(bytes * 5 / 4, bytes + 63))));
    }
}
