using Phi2Native.Cuda.Gpu;

namespace Phi2Native.Cuda.Emulator;

/// <summary>
/// The driver underneath a model of <see cref="CudaDevice"/>'s caching allocator on the emulated device: made-up
/// addresses, no memory, fences complete at once (emulated launches finish before the call returns). The emulated
/// device keeps its own guarded, quarantined mappings, which must not be reused; it runs the same
/// <see cref="CachingAllocator"/> over this beside them, so the driver allocations a profile counts (the allocator's
/// misses) are those CudaDevice would make for the same requests, with the same rounding and best fit.
/// </summary>
internal sealed class ModelledDriverMemory : IRawDeviceMemory
{
    private ulong _next = 1UL << 40;

    public bool TryAllocate(long bytes, out ulong address)
    {
        address = _next;
        _next += (ulong)bytes;
        return true;
    }

    public void Free(ulong address) { }

    public (long Free, long Total) QueryMemory() => (long.MaxValue, long.MaxValue);

    public IAllocationFence RecordFence() => CompletedFence.Instance;

    private sealed class CompletedFence : IAllocationFence
    {
        public static readonly CompletedFence Instance = new();
        public bool IsComplete => true;
        public void Wait() { }
        public void Dispose() { }
    }
}
