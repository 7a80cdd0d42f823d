namespace Phi2Native.Cuda;

/// <summary>
/// A device allocation failed for lack of memory even after the allocator returned its cached blocks to the driver
/// and tried again. The message says what was asked for, what this process holds, what the device has left and
/// what to do about it.
/// </summary>
public sealed class DeviceOutOfMemoryException : Phi2Exception
{
    /// <summary>The size asked for, in bytes.</summary>
    public long RequestedBytes { get; }

    /// <summary>Bytes in live allocations of this device object when the request failed.</summary>
    public long BytesInUse { get; }

    /// <summary>Bytes this device object held from the driver when the request failed (after releasing its cache).</summary>
    public long BytesReserved { get; }

    /// <summary>The device's free memory as the driver reported it, or -1 when it could not be asked.</summary>
    public long DeviceFreeBytes { get; }

    /// <summary>The device's total memory as the driver reported it, or -1 when it could not be asked.</summary>
    public long DeviceTotalBytes { get; }

    /// <summary>Creates the exception; the message is built from the numbers.</summary>
    internal DeviceOutOfMemoryException(string device, long requested, long rounded, long inUse, int liveAllocations,
        long reserved, long deviceFree, long deviceTotal)
        : base(Format(device, requested, rounded, inUse, liveAllocations, reserved, deviceFree, deviceTotal))
    {
        RequestedBytes = requested;
        BytesInUse = inUse;
        BytesReserved = reserved;
        DeviceFreeBytes = deviceFree;
        DeviceTotalBytes = deviceTotal;
    }

    private static string Format(string device, long requested, long rounded, long inUse, int live, long reserved, long free, long total)
    {
        string deviceMemory = free < 0 || total < 0 ? "the device's free memory could not be queried" : $"the device has {Bytes(free)} free of {Bytes(total)}";
        return $"{device} is out of memory: cannot allocate {Bytes(requested)} ({requested} bytes, {rounded} after rounding). " +
               $"This process holds {Bytes(inUse)} in {live} live allocation(s) and {Bytes(reserved)} reserved from the driver " +
               $"(its cache of freed blocks was released and the allocation retried once); {deviceMemory}. " +
               "Dispose buffers and tensors no longer needed, lower the batch size or sequence length, " +
               "or check with nvidia-smi whether another process holds device memory.";
    }

    /// <summary>"1.50 GiB", "12.0 MiB", "512 B": sizes as people read them.</summary>
    internal static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };
}
