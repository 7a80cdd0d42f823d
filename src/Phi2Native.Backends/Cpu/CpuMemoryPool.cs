using System.Numerics;
using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

/// <summary>
/// A caching allocator for CPU tensors. A training step frees and reallocates the same sizes every step; blocks
/// over glibc's mmap threshold (32 MiB at most) would otherwise be unmapped and mapped again, and every page
/// faulted in anew (measured: a third of a Phi-2-sized step went to the kernel). Freed blocks are kept in
/// buckets by rounded size and handed out again.
/// </summary>
/// <remarks>Sizes round up to a multiple of an eighth of their next power of two: at most 25% (or 63 bytes) of slack, in 64-byte steps at least.</remarks>
internal sealed unsafe class CpuMemoryPool
{
    private readonly object _lock = new();
    private readonly Dictionary<long, Stack<nint>> _free = new();
    private long _inUse, _peak, _cached;

    /// <param name="maxCachedBytes">Freed memory beyond this is returned to the system at once.</param>
    public CpuMemoryPool(long maxCachedBytes) => MaxCachedBytes = maxCachedBytes;

    public long MaxCachedBytes { get; }

    public MemoryStatistics Statistics
    {
        get { lock (_lock) return new(_inUse, _peak, _cached); }
    }

    /// <summary>A 64-byte aligned block of at least <paramref name="bytes"/>; <paramref name="capacity"/> is its real size.</summary>
    public void* Rent(long bytes, out long capacity)
    {
        capacity = RoundUp(bytes);
        lock (_lock)
        {
            _inUse += capacity;
            _peak = Math.Max(_peak, _inUse);
            if (_free.TryGetValue(capacity, out var stack) && stack.Count > 0)
            {
                _cached -= capacity;
                return (void*)stack.Pop();
            }
        }
        try
        {
            return NativeMemory.AlignedAlloc((nuint)capacity, 64);
        }
        catch (OutOfMemoryException)
        {
            // Cached blocks of other sizes may be what stands in the way: give them back and try once more.
            ReleaseCached();
            try
            {
                return NativeMemory.AlignedAlloc((nuint)capacity, 64);
            }
            catch (OutOfMemoryException e)
            {
                lock (_lock) _inUse -= capacity;
                throw new OutOfMemoryException($"the CPU backend could not allocate {capacity:N0} bytes ({Statistics.BytesInUse:N0} in use by tensors)", e);
            }
        }
    }

    public void Return(void* pointer, long capacity)
    {
        lock (_lock)
        {
            _inUse -= capacity;
            if (_cached + capacity <= MaxCachedBytes)
            {
                if (!_free.TryGetValue(capacity, out var stack)) _free[capacity] = stack = new Stack<nint>();
                stack.Push((nint)pointer);
                _cached += capacity;
                return;
            }
        }
        NativeMemory.AlignedFree(pointer);
    }

    /// <summary>Returns every cached block to the system.</summary>
    public void ReleaseCached()
    {
        List<nint> blocks;
        lock (_lock)
        {
            blocks = _free.Values.SelectMany(stack => stack).ToList();
            _free.Clear();
            _cached = 0;
        }
        foreach (var block in blocks) NativeMemory.AlignedFree((void*)block);
    }

    public void ResetPeak()
    {
        lock (_lock) _peak = _inUse;
    }

    internal static long RoundUp(long bytes)
    {
        if (bytes <= 64) return 64;
        long quarter = Math.Max(64, (long)BitOperations.RoundUpToPowerOf2((ulong)bytes) / 8);
        return (bytes + quarter - 1) / quarter * quarter;
    }
}
