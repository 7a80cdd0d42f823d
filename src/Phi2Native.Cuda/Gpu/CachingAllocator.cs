using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// A caching device allocator: freed blocks are kept and handed out again instead of going back to the driver,
/// because cuMemAlloc/cuMemFree are slow (cuMemFree synchronizes the device) and a training step allocates and
/// frees the same sizes over and over.
/// </summary>
/// <remarks>
/// <para>
/// Sizes are rounded up: requests up to <see cref="SmallLimit"/> (1 MiB) to a multiple of <see cref="SmallGranularity"/>
/// (512 B), larger ones to a multiple of <see cref="LargeGranularity"/> (2 MiB), so requests that differ a little share
/// blocks. Each block is one driver allocation (blocks are never split or merged), so every pointer keeps the
/// driver's 256-byte alignment. A request takes the smallest cached block that fits (best fit) and wastes at most a
/// quarter of its rounded size (<see cref="MaxWasteDivisor"/>); otherwise it allocates a new block.
/// </para>
/// <para>
/// Stream safety: <see cref="IDeviceApi.Allocate"/> takes no stream, so the allocator cannot know which streams will
/// use a block, and reusing "only on the same stream" (what PyTorch does, with record_stream for the exceptions)
/// would be unsafe for a caller that allocates once and uses the memory on two streams. So a freed block is held
/// back until a fence - one event recorded on every live stream, after the free - has completed: then no copy, fill
/// or kernel queued before the free can still touch it, whatever stream it ran on. Fences are recorded lazily (at
/// the next allocation, for every block freed since the last fence), so a burst of frees costs one fence. The price:
/// while the host runs ahead of the GPU, freed blocks are not yet reusable and new ones are allocated; under memory
/// pressure the allocator waits for the outstanding fences before it gives up (see below).
/// </para>
/// <para>
/// Out of memory: when the driver refuses, the allocator waits for every outstanding fence and looks in the cache
/// again; failing that it returns all cached blocks to the driver and retries once; failing that it throws
/// <see cref="DeviceOutOfMemoryException"/> with the numbers. Freeing a pointer it did not hand out, or freeing twice,
/// throws <see cref="ArgumentException"/>. Thread-safe: one lock around everything.
/// </para>
/// <para>
/// Graph capture (<see cref="BeginCapture"/> .. <see cref="EndCapture"/>): a CUDA graph replays the addresses its
/// capture saw, so every block the capture takes or frees belongs to that graph's <see cref="GraphPool"/> until the pool
/// is released (the graph destroyed). While capturing, an allocation is served from the pool's free blocks, then from
/// the ready cache (the block joins the pool), never from the driver (a global-mode capture refuses cuMemAlloc: the call
/// throws instead); a free puts the block straight back into its pool with no fence (the graph's work is ordered on
/// its one stream, and a capture runs nothing), and a block from outside the pool freed during a capture joins the pool,
/// since the captured work may still read it on every replay. No fence is recorded or polled while capturing: event
/// records on other streams, and event queries, are what a global-mode capture refuses. Blocks a graph's pool holds
/// are never handed to anyone else; releasing the pool fences its free blocks like any free.
/// </para>
/// </remarks>
internal sealed class CachingAllocator : IDisposable
{
    /// <summary>Requests up to this many bytes are small and rounded to <see cref="SmallGranularity"/>.</summary>
    public const long SmallLimit = 1L << 20;

    /// <summary>Rounding of small requests: half a KiB (and a multiple of the 256-byte alignment kernels may assume).</summary>
    public const long SmallGranularity = 512;

    /// <summary>Rounding of large requests: 2 MiB, the driver's page size for large allocations.</summary>
    public const long LargeGranularity = 2L << 20;

    /// <summary>A cached block serves a request only if its size is at most the rounded request plus 1/this of it.</summary>
    public const int MaxWasteDivisor = 4;

    internal sealed class Block(ulong address, long size)
    {
        public ulong Address { get; } = address;
        public long Size { get; } = size;          // rounded: what the driver allocated
        public long Requested { get; set; }         // what the current (or last) owner asked for
        public GraphPool? Pool { get; set; }        // the graph this block is reserved to, or null
    }

    /// <summary>
    /// The blocks one CUDA graph's capture took or freed: reserved to that graph (its replays write them) until
    /// <see cref="ReleasePool"/>. A re-capture that updates the graph captures into the same pool.
    /// </summary>
    internal sealed class GraphPool
    {
        internal readonly SortedSet<Block> Free = new(SizeOrder.Instance);
        internal readonly HashSet<Block> Owned = [];
        internal bool Released;

        /// <summary>Bytes of the blocks the pool holds, live and free (rounded sizes).</summary>
        public long BytesHeld { get; internal set; }

        /// <summary>Blocks the pool holds that no one is using now.</summary>
        public int FreeBlocks => Free.Count;
    }

    // Best fit: the cache is ordered by size, then address, so the first block at or above a size is the smallest that fits.
    internal sealed class SizeOrder : IComparer<Block>
    {
        public static readonly SizeOrder Instance = new();
        public int Compare(Block? x, Block? y)
        {
            int c = x!.Size.CompareTo(y!.Size);
            return c != 0 ? c : x.Address.CompareTo(y.Address);
        }
    }

    private readonly object _gate = new();
    private readonly IRawDeviceMemory _raw;
    private readonly string _deviceName;
    private readonly Dictionary<ulong, Block> _live = [];
    private readonly Dictionary<ulong, Block> _freed = [];                 // every block held after a free: unfenced, fenced, ready
    private readonly List<Block> _unfenced = [];                           // freed since the last fence
    private readonly Queue<(IAllocationFence Fence, List<Block> Blocks)> _fenced = new(); // oldest fence first
    private readonly SortedSet<Block> _ready = new(SizeOrder.Instance);   // reusable now
    private readonly List<GraphPool> _pools = [];
    private long _bytesInUse, _peakInUse, _reserved, _peakReserved, _total, _hits;
    private GraphPool? _capturing;
    private bool _disposed;

    /// <summary>Creates an allocator over <paramref name="raw"/>; <paramref name="deviceName"/> appears in error messages.</summary>
    public CachingAllocator(IRawDeviceMemory raw, string deviceName)
    {
        ArgumentNullException.ThrowIfNull(raw);
        ArgumentNullException.ThrowIfNull(deviceName);
        _raw = raw;
        _deviceName = deviceName;
    }

    /// <summary>The size a request of <paramref name="bytes"/> is rounded to (see the class remarks).</summary>
    public static long RoundSize(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        long granularity = bytes <= SmallLimit ? SmallGranularity : LargeGranularity;
        if (bytes > long.MaxValue - granularity) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "too large to allocate");
        return (bytes + granularity - 1) / granularity * granularity;
    }

    /// <summary>The statistics right now.</summary>
    public DeviceMemoryStatistics Statistics
    {
        get
        {
            lock (_gate) return new DeviceMemoryStatistics(_bytesInUse, _peakInUse, _live.Count, _total, _reserved, _peakReserved, _hits);
        }
    }

    /// <summary>Freed blocks not yet reusable because a fence after their free has not completed (for tests and diagnostics).</summary>
    public int PendingBlocks
    {
        get { lock (_gate) return _unfenced.Count + _fenced.Sum(f => f.Blocks.Count); }
    }

    /// <summary>Allocates <paramref name="bytes"/> (more than 0), from the cache when a freed block fits.</summary>
    /// <exception cref="DeviceOutOfMemoryException">The driver refused even after the cache was released.</exception>
    public DevicePtr Allocate(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "an allocation must be more than 0 bytes");
        long size = RoundSize(bytes);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_capturing is { } pool) return Hand(AllocateForCapture(pool, bytes, size), bytes);
            Collect(wait: false);
            Block? block = TakeFromCache(size);
            if (block is not null) _hits++;
            else block = AllocateFromDriver(size);
            if (block is null)
            {
                // Wait for everything freed to become reusable, then look again.
                Collect(wait: true);
                block = TakeFromCache(size);
                if (block is not null) _hits++;
            }
            if (block is null)
            {
                ReleaseReady();
                block = AllocateFromDriver(size) ?? throw OutOfMemory(bytes, size);
            }
            return Hand(block, bytes);
        }
    }

    private DevicePtr Hand(Block block, long bytes)
    {
        block.Requested = bytes;
        _live.Add(block.Address, block);
        _bytesInUse += bytes;
        _peakInUse = Math.Max(_peakInUse, _bytesInUse);
        _total++;
        return new DevicePtr(block.Address);
    }

    // The pool's best fit, else the ready cache's (the block joins the pool); never the driver, never a fence.
    private Block AllocateForCapture(GraphPool pool, long bytes, long size)
    {
        Block? block = BestFit(pool.Free, size);
        if (block is not null) pool.Free.Remove(block);
        else if ((block = TakeFromCache(size)) is not null) Adopt(pool, block);
        if (block is null)
            throw new InvalidOperationException(
                $"a graph capture on {_deviceName} needs {bytes} bytes that neither its pool nor the cache holds, and a capture cannot allocate from the driver: run the step once uncaptured first");
        _freed.Remove(block.Address);
        _hits++;
        return block;
    }

    private static void Adopt(GraphPool pool, Block block)
    {
        block.Pool = pool;
        pool.Owned.Add(block);
        pool.BytesHeld += block.Size;
    }

    /// <summary>A new, empty pool for a graph's capture.</summary>
    public GraphPool CreatePool()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var pool = new GraphPool();
            _pools.Add(pool);
            return pool;
        }
    }

    /// <summary>
    /// Starts serving allocations and frees from <paramref name="pool"/> (see the class remarks), after waiting for every
    /// outstanding fence so that the whole cache is ready for the capture to take from (a wait before the capture, not
    /// during it). One capture at a time.
    /// </summary>
    /// <exception cref="InvalidOperationException">A capture is already under way, or the pool was released.</exception>
    public void BeginCapture(GraphPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_capturing is not null) throw new InvalidOperationException($"a graph capture on {_deviceName} is already allocating from its pool");
            if (pool.Released) throw new InvalidOperationException("the graph pool was released with its graph");
            Collect(wait: true);
            _capturing = pool;
        }
    }

    /// <summary>Ends the capture's use of its pool: allocations and frees take the ordinary path again.</summary>
    public void EndCapture()
    {
        lock (_gate) _capturing = null;
    }

    /// <summary>
    /// Gives a destroyed graph's blocks back: its free blocks to the cache, once a fence after the graph's last queued
    /// launch has completed; blocks still live go back the ordinary way when they are freed. Idempotent.
    /// </summary>
    public void ReleasePool(GraphPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        lock (_gate)
        {
            if (pool.Released || _disposed) return;
            pool.Released = true;
            _pools.Remove(pool);
            foreach (Block b in pool.Owned) b.Pool = null;
            _unfenced.AddRange(pool.Free);
            pool.Free.Clear();
            pool.Owned.Clear();
            pool.BytesHeld = 0;
        }
    }

    /// <summary>
    /// Frees an allocation: its block goes to the cache, reusable once the work queued before this call has finished.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="pointer"/> is null, was not returned by <see cref="Allocate"/>, or was already freed.</exception>
    public void Free(DevicePtr pointer)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (pointer.IsNull) throw new ArgumentException("cannot free the null device pointer", nameof(pointer));
            if (!_live.Remove(pointer.Address, out Block? block))
            {
                string why = _freed.ContainsKey(pointer.Address)
                    ? "it was already freed"
                    : "it was not returned by Allocate of this device (or was freed and its block since returned to the driver)";
                throw new ArgumentException($"cannot free {pointer} on {_deviceName}: {why}", nameof(pointer));
            }
            _bytesInUse -= block.Requested;
            _freed.Add(block.Address, block);
            // A block the captured work may use is kept for the graph; no fence is recorded during a capture.
            if (block.Pool is null && _capturing is { } capturing) Adopt(capturing, block);
            if (block.Pool is { } pool) pool.Free.Add(block);
            else _unfenced.Add(block);
        }
    }

    /// <summary>
    /// Records a fence for the blocks freed since the last one. The device calls this before a stream it may have
    /// to leave out of later fences goes away, and <see cref="Allocate"/> calls it itself.
    /// </summary>
    public void FencePending()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            RecordFence();
        }
    }

    /// <summary>
    /// Waits until every freed block is reusable, then returns all cached blocks to the driver (for another process,
    /// or before measuring). Live allocations are untouched. Returns the bytes released.
    /// </summary>
    public long EmptyCache()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Collect(wait: true);
            return ReleaseReady();
        }
    }

    /// <summary>
    /// Returns every block, live and cached, to the driver, after the queued work has finished. Pointers handed out
    /// before become invalid.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            Exception? first = null;
            try { Collect(wait: true); }
            catch (Exception e) { first = e; DropFences(); }
            foreach (Block b in _live.Values.Concat(_ready).Concat(_unfenced).Concat(_pools.SelectMany(p => p.Free)).ToList())
            {
                try { _raw.Free(b.Address); }
                catch (Exception e) { first ??= e; }
            }
            _live.Clear();
            _ready.Clear();
            foreach (var pool in _pools) { pool.Free.Clear(); pool.Owned.Clear(); pool.Released = true; }
            _pools.Clear();
            _unfenced.Clear();
            _freed.Clear();
            _bytesInUse = 0;
            _reserved = 0;
            if (first is not null) throw first;
        }
    }

    // Moves freed blocks whose fence has completed into the cache. Fences are recorded in order on each stream, so a
    // later one cannot complete before an earlier one on the same streams: polling stops at the first incomplete one.
    private void Collect(bool wait)
    {
        RecordFence();
        while (_fenced.TryPeek(out var entry))
        {
            if (wait) entry.Fence.Wait();
            else if (!entry.Fence.IsComplete) break;
            _fenced.Dequeue();
            entry.Fence.Dispose();
            foreach (Block b in entry.Blocks) _ready.Add(b);
        }
    }

    private void RecordFence()
    {
        if (_unfenced.Count == 0) return;
        var fence = _raw.RecordFence();
        _fenced.Enqueue((fence, [.. _unfenced]));
        _unfenced.Clear();
    }

    private void DropFences()
    {
        // After a failed wait (a kernel fault), the blocks behind the fences are still the driver's to free.
        while (_fenced.TryDequeue(out var entry))
        {
            try { entry.Fence.Dispose(); } catch (Exception) { /* the context is broken; freeing below reports it */ }
            _unfenced.AddRange(entry.Blocks);
        }
    }

    private Block? TakeFromCache(long size)
    {
        Block? best = BestFit(_ready, size);
        if (best is null) return null;
        _ready.Remove(best);
        _freed.Remove(best.Address);
        return best;
    }

    private static Block? BestFit(SortedSet<Block> blocks, long size)
    {
        if (blocks.Count == 0) return null;
        long limit = size + size / MaxWasteDivisor;
        return blocks.GetViewBetween(new Block(0, size), new Block(ulong.MaxValue, limit)).Min;
    }

    private Block? AllocateFromDriver(long size)
    {
        if (!_raw.TryAllocate(size, out ulong address)) return null;
        Phi2Native.Profiling.ProfileRecorder.Current?.DriverAllocation(size);
        _reserved += size;
        _peakReserved = Math.Max(_peakReserved, _reserved);
        return new Block(address, size);
    }

    private long ReleaseReady()
    {
        long released = 0;
        while (_ready.Min is { } b)
        {
            _raw.Free(b.Address);
            _ready.Remove(b);
            _freed.Remove(b.Address);
            _reserved -= b.Size;
            released += b.Size;
        }
        return released;
    }

    private DeviceOutOfMemoryException OutOfMemory(long bytes, long size)
    {
        long free = -1, total = -1;
        try { (free, total) = _raw.QueryMemory(); }
        catch (Exception e) when (e is CudaException or InvalidOperationException) { /* the message says it could not be asked */ }
        return new DeviceOutOfMemoryException(_deviceName, bytes, size, _bytesInUse, _live.Count, _reserved, free, total);
    }
}
