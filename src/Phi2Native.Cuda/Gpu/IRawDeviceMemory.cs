namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// What <see cref="CachingAllocator"/> sits on: raw allocations from the driver (cuMemAlloc / cuMemFree), the
/// device's free and total memory, and fences that say when the work queued so far has finished. The real one is
/// CudaDevice's; tests use a fake that hands out made-up addresses and can run out of memory, so the
/// allocator's logic is checked without a GPU.
/// </summary>
internal interface IRawDeviceMemory
{
    /// <summary>
    /// Allocates <paramref name="bytes"/> (already rounded by the allocator). Returns false when the device is out of
    /// memory; any other failure throws.
    /// </summary>
    bool TryAllocate(long bytes, out ulong address);

    /// <summary>Returns an allocation made by <see cref="TryAllocate"/> to the driver.</summary>
    void Free(ulong address);

    /// <summary>The device's free and total memory right now (cuMemGetInfo), for the out-of-memory message.</summary>
    (long Free, long Total) QueryMemory();

    /// <summary>
    /// A fence after all work queued so far on every stream of the device: once it is complete, memory freed before
    /// it was recorded is no longer read or written by any queued copy, fill or kernel.
    /// </summary>
    IAllocationFence RecordFence();
}

/// <summary>A point in every stream's queue (on a GPU: one event recorded per stream). Disposing returns its events.</summary>
internal interface IAllocationFence : IDisposable
{
    /// <summary>Polls without blocking: true once all work queued before the fence has finished.</summary>
    bool IsComplete { get; }

    /// <summary>Blocks until the fence is complete; an error of the work before it surfaces here.</summary>
    void Wait();
}
