using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="CachingAllocator"/>'s graph pools over a fake driver: a capture allocates from its pool and the ready cache,
/// never from the driver, and records no fence (a global-mode capture refuses event records on other streams and event
/// queries); what it takes or frees is the graph's until the pool is released, then reusable after a fence.
/// </summary>
[TestFixture]
public class CachingAllocatorGraphPoolTests
{
    private sealed class FakeDriver : IRawDeviceMemory
    {
        private ulong _next = 0x7f0000000000;
        public int Allocations { get; private set; }
        public int Fences { get; private set; }

        public bool TryAllocate(long bytes, out ulong address)
        {
            address = _next;
            _next += (ulong)bytes + 4096;
            Allocations++;
            return true;
        }

        public void Free(ulong address) { }
        public (long Free, long Total) QueryMemory() => (1L << 40, 1L << 40);

        public IAllocationFence RecordFence()
        {
            Fences++;
            return new Done();
        }

        private sealed class Done : IAllocationFence
        {
            public bool IsComplete => true;
            public void Wait() { }
            public void Dispose() { }
        }
    }

    [Test]
    public void ACaptureTakesFromThePoolAndTheCache_NeverTheDriver_AndRecordsNoFence()
    {
        var driver = new FakeDriver();
        using var allocator = new CachingAllocator(driver, "fake");
        var a = allocator.Allocate(1000);
        var b = allocator.Allocate(3000);
        allocator.Free(a);
        allocator.Free(b);
        var pool = allocator.CreatePool();
        allocator.BeginCapture(pool);   // fences the frees and waits: the cache is ready before the capture
        int allocations = driver.Allocations, fences = driver.Fences;

        var x = allocator.Allocate(1000);
        Assert.That(x, Is.EqualTo(a), "from the ready cache");
        allocator.Free(x);
        Assert.That(allocator.Allocate(900), Is.EqualTo(a), "a block freed in the capture is the pool's at once, with no fence");
        Assert.That(() => allocator.Allocate(1L << 20), Throws.InvalidOperationException.With.Message.Contains("cannot allocate from the driver"));
        Assert.That(driver.Allocations, Is.EqualTo(allocations), "no driver allocation during the capture");
        Assert.That(driver.Fences, Is.EqualTo(fences), "no fence during the capture");
        allocator.EndCapture();
        Assert.That(pool.BytesHeld, Is.EqualTo(CachingAllocator.RoundSize(1000)));
    }

    [Test]
    public void APoolsBlocksAreTheGraphsUntilReleased_ABlockFreedDuringTheCaptureToo()
    {
        var driver = new FakeDriver();
        using var allocator = new CachingAllocator(driver, "fake");
        var a = allocator.Allocate(1000);
        var outside = allocator.Allocate(5000);   // allocated before the capture, freed during it
        allocator.Free(a);
        var pool = allocator.CreatePool();
        allocator.BeginCapture(pool);
        var x = allocator.Allocate(1000);
        allocator.Free(x);
        allocator.Free(outside);
        allocator.EndCapture();
        Assert.That(pool.FreeBlocks, Is.EqualTo(2));

        var other = allocator.Allocate(1000);
        var other2 = allocator.Allocate(5000);
        Assert.That(new[] { other, other2 }, Has.None.EqualTo(a).And.None.EqualTo(outside), "the graph's blocks are never handed to anyone else");
        allocator.ReleasePool(pool);
        Assert.That(allocator.Allocate(1000), Is.EqualTo(a), "released: reusable after its fence");
        Assert.That(allocator.Allocate(5000), Is.EqualTo(outside));
        Assert.That(() => allocator.BeginCapture(pool), Throws.InvalidOperationException.With.Message.Contains("released"));
    }

    [Test]
    public void OneCaptureAtATime_AndDisposeFreesThePoolsBlocks()
    {
        var driver = new FakeDriver();
        var allocator = new CachingAllocator(driver, "fake");
        allocator.Free(allocator.Allocate(100));
        var pool = allocator.CreatePool();
        allocator.BeginCapture(pool);
        Assert.That(() => allocator.BeginCapture(allocator.CreatePool()), Throws.InvalidOperationException.With.Message.Contains("already"));
        allocator.Free(allocator.Allocate(100));
        allocator.EndCapture();
        Assert.That(allocator.Statistics.BytesReserved, Is.EqualTo(512));
        allocator.Dispose();
        Assert.That(allocator.Statistics.BytesReserved, Is.Zero);
    }
}
