using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="CachingAllocator"/> over a fake driver: rounding, best-fit reuse with bounded waste, reuse only after
/// the fence behind a free has completed, statistics, the out-of-memory path (wait, release, retry once, then a
/// message with the numbers) and refused frees.
/// </summary>
[TestFixture]
public class CachingAllocatorTests
{
    private const long MiB = 1L << 20;

    /// <summary>A driver that hands out made-up addresses from a fixed capacity and records every call.</summary>
    private sealed class FakeDriver(long capacity) : IRawDeviceMemory
    {
        private ulong _next = 0x7f0000000000;
        public readonly Dictionary<ulong, long> Live = [];
        public readonly List<FakeFence> Fences = [];
        public long Used { get; private set; }
        public int Allocations { get; private set; }
        public int Frees { get; private set; }
        public bool FencesCompleteAtOnce { get; set; } = true;

        public bool TryAllocate(long bytes, out ulong address)
        {
            address = 0;
            if (Used + bytes > capacity) return false;
            address = _next;
            _next += (ulong)bytes + 4096; // a gap, so an off-by-one in the allocator cannot land inside a neighbour
            Live.Add(address, bytes);
            Used += bytes;
            Allocations++;
            return true;
        }

        public void Free(ulong address)
        {
            if (!Live.Remove(address, out long bytes)) throw new InvalidOperationException($"fake driver: 0x{address:x} is not allocated");
            Used -= bytes;
            Frees++;
        }

        public (long Free, long Total) QueryMemory() => (capacity - Used, capacity);

        public IAllocationFence RecordFence()
        {
            var fence = new FakeFence { Complete = FencesCompleteAtOnce };
            Fences.Add(fence);
            return fence;
        }
    }

    private sealed class FakeFence : IAllocationFence
    {
        public bool Complete { get; set; }
        public bool Waited { get; private set; }
        public bool Disposed { get; private set; }
        public bool IsComplete => Complete;
        public void Wait() { Waited = true; Complete = true; }
        public void Dispose() => Disposed = true;
    }

    [TestCase(1, 512)]
    [TestCase(512, 512)]
    [TestCase(513, 1024)]
    [TestCase(1L << 20, 1L << 20)]
    [TestCase((1L << 20) + 1, 2L << 20)]
    [TestCase(3L << 20, 4L << 20)]
    [TestCase((4L << 20) + 1, 6L << 20)]
    public void SizesRoundTo512BytesUpTo1MiBAndTo2MiBAbove(long bytes, long rounded) =>
        Assert.That(CachingAllocator.RoundSize(bytes), Is.EqualTo(rounded));

    [Test]
    public void AFreedBlockIsReusedOnceItsFenceHasCompleted()
    {
        var driver = new FakeDriver(100 * MiB) { FencesCompleteAtOnce = false };
        using var allocator = new CachingAllocator(driver, "fake");
        DevicePtr a = allocator.Allocate(1000);
        allocator.Free(a);

        // Work queued before the free may still use a: the next allocation must not get it.
        DevicePtr b = allocator.Allocate(1000);
        Assert.That(b, Is.Not.EqualTo(a));
        Assert.That(driver.Fences, Has.Count.EqualTo(1), "the free is fenced at the next allocation");
        Assert.That(allocator.PendingBlocks, Is.EqualTo(1));

        driver.Fences[0].Complete = true;
        DevicePtr c = allocator.Allocate(900);
        Assert.That(c, Is.EqualTo(a), "same rounded size: the cached block");
        Assert.That(driver.Fences[0].Disposed, Is.True, "a completed fence returns its events");
        Assert.That(allocator.Statistics.CacheHits, Is.EqualTo(1));
        Assert.That(driver.Allocations, Is.EqualTo(2));
    }

    [Test]
    public void ABurstOfFreesCostsOneFence()
    {
        var driver = new FakeDriver(100 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        var pointers = Enumerable.Range(0, 5).Select(_ => allocator.Allocate(4096)).ToList();
        foreach (var p in pointers) allocator.Free(p);
        Assert.That(driver.Fences, Is.Empty, "fences are recorded lazily");
        allocator.Allocate(4096);
        Assert.That(driver.Fences, Has.Count.EqualTo(1));
    }

    [Test]
    public void BestFitTakesTheSmallestBlockThatFitsAndWastesAtMostAQuarter()
    {
        var driver = new FakeDriver(1000 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        var bySize = new[] { 2, 4, 6, 10 }.ToDictionary(m => m, m => allocator.Allocate(m * MiB));
        foreach (var p in bySize.Values) allocator.Free(p);

        Assert.That(allocator.Allocate(3 * MiB + 512 * 1024), Is.EqualTo(bySize[4]), "3.5 MiB rounds to 4 MiB: the 4 MiB block, not 6 or 10");
        Assert.That(allocator.Allocate(8 * MiB), Is.EqualTo(bySize[10]), "8 MiB may take 10 MiB (within a quarter)");
        DevicePtr fresh = allocator.Allocate(12 * MiB);
        Assert.That(bySize.Values, Does.Not.Contain(fresh), "nothing cached is large enough");
        DevicePtr small = allocator.Allocate(1 * MiB);
        Assert.That(small, Is.Not.EqualTo(bySize[2]).And.Not.EqualTo(bySize[6]), "1 MiB would waste half of 2 MiB: a new block");
        Assert.That(allocator.Statistics.CacheHits, Is.EqualTo(2));
    }

    [Test]
    public void ASmallRequestDoesNotTakeADoubleSizedSmallBlock()
    {
        var driver = new FakeDriver(100 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        DevicePtr kib = allocator.Allocate(1024);
        allocator.Free(kib);
        Assert.That(allocator.Allocate(100), Is.Not.EqualTo(kib), "100 bytes round to 512; a 1024-byte block would waste half");
        Assert.That(allocator.Allocate(1000), Is.EqualTo(kib));
    }

    [Test]
    public void StatisticsCountRequestedBytesReservedBytesAndHits()
    {
        var driver = new FakeDriver(100 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        Assert.That(allocator.Statistics, Is.EqualTo(new DeviceMemoryStatistics(0, 0, 0, 0, 0, 0, 0)));
        DevicePtr a = allocator.Allocate(100), b = allocator.Allocate(3 * MiB);
        Assert.That(allocator.Statistics, Is.EqualTo(new DeviceMemoryStatistics(100 + 3 * MiB, 100 + 3 * MiB, 2, 2, 512 + 4 * MiB, 512 + 4 * MiB, 0)));
        allocator.Free(b);
        Assert.That(allocator.Statistics, Is.EqualTo(new DeviceMemoryStatistics(100, 100 + 3 * MiB, 1, 2, 512 + 4 * MiB, 512 + 4 * MiB, 0)),
            "a freed block stays reserved");
        DevicePtr c = allocator.Allocate(4 * MiB);
        Assert.That(c, Is.EqualTo(b));
        Assert.That(allocator.Statistics, Is.EqualTo(new DeviceMemoryStatistics(100 + 4 * MiB, 100 + 4 * MiB, 2, 3, 512 + 4 * MiB, 512 + 4 * MiB, 1)));
        allocator.Free(a);
        allocator.Free(c);
        Assert.That(allocator.EmptyCache(), Is.EqualTo(512 + 4 * MiB));
        Assert.That(allocator.Statistics, Is.EqualTo(new DeviceMemoryStatistics(0, 100 + 4 * MiB, 0, 3, 0, 512 + 4 * MiB, 1)));
        Assert.That(driver.Live, Is.Empty);
    }

    [Test]
    public void OutOfMemoryFirstWaitsForPendingFreesAndReusesThem()
    {
        var driver = new FakeDriver(10 * MiB) { FencesCompleteAtOnce = false };
        using var allocator = new CachingAllocator(driver, "fake");
        DevicePtr a = allocator.Allocate(6 * MiB);
        allocator.Free(a);
        DevicePtr b = allocator.Allocate(6 * MiB); // 6 + 6 > 10: the driver refuses, so the allocator waits for a's fence
        Assert.That(b, Is.EqualTo(a));
        Assert.That(driver.Fences.Single().Waited, Is.True);
        Assert.That(driver.Allocations, Is.EqualTo(1));
    }

    [Test]
    public void OutOfMemoryReleasesTheCacheAndRetriesOnce()
    {
        var driver = new FakeDriver(10 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        DevicePtr a = allocator.Allocate(4 * MiB), b = allocator.Allocate(4 * MiB);
        allocator.Free(a);
        allocator.Free(b);
        // No cached 4 MiB block fits 8 MiB, and 8 + 8 > 10: release both and retry.
        DevicePtr c = allocator.Allocate(8 * MiB);
        Assert.That(c.IsNull, Is.False);
        Assert.That(driver.Frees, Is.EqualTo(2));
        Assert.That(allocator.Statistics.BytesReserved, Is.EqualTo(8 * MiB));
    }

    [Test]
    public void OutOfMemoryAfterTheRetryThrowsWithTheNumbers()
    {
        var driver = new FakeDriver(10 * MiB);
        using var allocator = new CachingAllocator(driver, "NVIDIA Fake (sm_90)");
        DevicePtr held = allocator.Allocate(8 * MiB);
        allocator.Free(allocator.Allocate(1000)); // a cached block, released before giving up

        var e = Assert.Throws<DeviceOutOfMemoryException>(() => allocator.Allocate(4 * MiB))!;
        Assert.That(e.RequestedBytes, Is.EqualTo(4 * MiB));
        Assert.That(e.BytesInUse, Is.EqualTo(8 * MiB));
        Assert.That(e.BytesReserved, Is.EqualTo(8 * MiB), "the cached 512-byte block was released first");
        Assert.That(e.DeviceFreeBytes, Is.EqualTo(2 * MiB));
        Assert.That(e.DeviceTotalBytes, Is.EqualTo(10 * MiB));
        Assert.That(e.Message, Does.Contain("NVIDIA Fake (sm_90) is out of memory").And.Contain("4.0 MiB (4194304 bytes")
            .And.Contain("8.0 MiB in 1 live allocation").And.Contain("2.0 MiB free of 10.0 MiB").And.Contain("lower the batch size"));
        Assert.That(driver.Live.Keys, Is.EqualTo(new[] { held.Address }));
    }

    [Test]
    public void FreeingNullAnUnknownPointerOrTwiceIsRefused()
    {
        var driver = new FakeDriver(10 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        DevicePtr a = allocator.Allocate(100);
        Assert.That(() => allocator.Free(DevicePtr.Null), Throws.ArgumentException.With.Property("ParamName").EqualTo("pointer"));
        Assert.That(() => allocator.Free(a.Offset(256)), Throws.ArgumentException.With.Message.Contains("not returned by Allocate"));
        allocator.Free(a);
        Assert.That(() => allocator.Free(a), Throws.ArgumentException.With.Message.Contains("already freed"));
        Assert.That(() => allocator.Allocate(0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("bytes"));
    }

    [Test]
    public void DisposeWaitsAndReturnsEveryBlockLiveOrCached()
    {
        var driver = new FakeDriver(100 * MiB) { FencesCompleteAtOnce = false };
        var allocator = new CachingAllocator(driver, "fake");
        allocator.Allocate(100);
        allocator.Free(allocator.Allocate(5 * MiB));
        allocator.Allocate(7 * MiB);
        allocator.Dispose();
        Assert.That(driver.Live, Is.Empty);
        Assert.That(driver.Fences, Is.All.Matches<FakeFence>(f => f.Waited && f.Disposed));
        Assert.That(() => allocator.Allocate(1), Throws.InstanceOf<ObjectDisposedException>());
        allocator.Dispose(); // twice is harmless
    }

    [Test]
    public void ManyThreadsKeepTheBooksStraight()
    {
        var driver = new FakeDriver(1000 * MiB);
        using var allocator = new CachingAllocator(driver, "fake");
        Parallel.For(0, 8, t =>
        {
            var random = new Random(t);
            var held = new List<DevicePtr>();
            for (int i = 0; i < 2000; i++)
            {
                if (held.Count > 0 && random.Next(2) == 0)
                {
                    int k = random.Next(held.Count);
                    allocator.Free(held[k]);
                    held.RemoveAt(k);
                }
                else held.Add(allocator.Allocate(random.Next(1, 3 * (int)MiB)));
            }
            foreach (var p in held) allocator.Free(p);
        });
        var stats = allocator.Statistics;
        Assert.That(stats.BytesInUse, Is.Zero);
        Assert.That(stats.LiveAllocations, Is.Zero);
        Assert.That(stats.CacheHits, Is.GreaterThan(0));
        Assert.That(stats.BytesReserved, Is.EqualTo(driver.Used));
    }
}
