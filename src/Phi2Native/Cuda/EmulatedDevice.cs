using System.Runtime.InteropServices;

namespace Phi2Native.Cuda;

/// <summary>
/// A call on the <see cref="EmulatedDevice"/> was refused or a kernel misbehaved: an address outside every live
/// allocation, a range crossing an allocation's end, a use after free, a kernel that wrote out of bounds, or a
/// launch the emulator failed. The message names the call (and for a launch, the kernel).
/// </summary>
public sealed class EmulatedDeviceException : Phi2Exception
{
    /// <summary>The <see cref="IDeviceApi"/> member that failed, e.g. <c>CopyToHost</c>.</summary>
    public string Call { get; }

    /// <summary>The kernel, when the failure is a launch's.</summary>
    public string? Kernel { get; }

    /// <summary>Creates the exception; the message reads <c>EmulatedDevice.Call: message</c>.</summary>
    public EmulatedDeviceException(string call, string message, string? kernel = null, Exception? inner = null)
        : base($"EmulatedDevice.{call}: {message}", inner)
    {
        Call = call;
        Kernel = kernel;
    }
}

/// <summary>
/// <see cref="IDeviceApi"/> over the kernel emulator (libphi2emu): a device pointer is a host address of native
/// memory and launches run synchronously on the calling thread. It is strict so that backend bugs fail in CI
/// instead of producing plausible numbers:
/// every allocation starts as 0xFF bytes (NaN in fp32, bf16 and fp16), so reading memory nobody wrote shows;
/// it is framed by guard bands that are checked after every launch and on free, so a kernel writing past
/// either end fails the launch naming the kernel and the allocation; copies and fills are checked against the
/// allocation they address; freed memory is poisoned and held in a quarantine (so its address cannot be
/// reused while it is remembered), so a use after free is refused by copies and caught after a launch.
/// </summary>
/// <remarks>Thread-safe: every call takes one lock (the emulator serializes launches process-wide anyway).</remarks>
public sealed unsafe partial class EmulatedDevice : IDeviceApi
{
    /// <summary>Bytes of guard band before and after each allocation; also the alignment of user pointers, as cudaMalloc's.</summary>
    public const int GuardBytes = 256;

    /// <summary>The byte fresh memory is filled with: 0xFFFF... is a NaN in fp32, bf16 and fp16 alike.</summary>
    public const byte FreshByte = 0xFF;

    /// <summary>The guard bands' byte. Not 0xFF and not 0, so neither a NaN-writing nor a zeroing kernel blends in.</summary>
    public const byte GuardByte = 0xA5;

    /// <summary>The byte freed memory is overwritten with, distinct from the others so a dump tells them apart.</summary>
    public const byte FreedByte = 0xDD;

    /// <summary>Default bound on quarantined (freed but still remembered) bytes.</summary>
    public const long DefaultQuarantineBytes = 64L << 20;

    private sealed class Block
    {
        public required long Id;
        public required byte* Base;        // start of the leading guard band
        public required ulong Start;       // the user pointer
        public required long Length;       // requested bytes
        public ulong End => Start + (ulong)Length;
        public byte* User => Base + GuardBytes;
        public override string ToString() => $"allocation #{Id} of {Length} bytes at 0x{Start:x}";
    }

    private readonly object _gate = new();
    private readonly List<Block> _live = [];          // sorted by Start, for binary search of an address
    private readonly LinkedList<Block> _quarantine = new();
    private readonly long _quarantineLimit;
    private long _quarantined;
    private long _bytesInUse, _peak, _total;
    private bool _disposed;

    /// <summary>Creates an emulated device.</summary>
    /// <param name="quarantineBytes">
    /// How many freed bytes stay poisoned and remembered before the oldest are released to the host. Larger
    /// catches older dangling pointers; each launch scans the quarantine, so larger also costs time.
    /// </param>
    public EmulatedDevice(long quarantineBytes = DefaultQuarantineBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(quarantineBytes);
        _quarantineLimit = quarantineBytes;
    }

    /// <inheritdoc />
    public DeviceMemoryStatistics Memory
    {
        get { lock (_gate) return new DeviceMemoryStatistics(_bytesInUse, _peak, _live.Count, _total); }
    }

    /// <inheritdoc />
    public DevicePtr Allocate(long bytes)
    {
        if (bytes <= 0) throw new EmulatedDeviceException(nameof(Allocate), $"size must be more than 0 bytes, got {bytes}");
        lock (_gate)
        {
            ThrowIfDisposed(nameof(Allocate));
            byte* b;
            try { b = (byte*)NativeMemory.AlignedAlloc((nuint)(bytes + 2 * GuardBytes), GuardBytes); }
            catch (OutOfMemoryException e) { throw new EmulatedDeviceException(nameof(Allocate), $"out of host memory for {bytes} bytes", inner: e); }
            var block = new Block { Id = ++_total, Base = b, Start = (ulong)(b + GuardBytes), Length = bytes };
            new Span<byte>(b, GuardBytes).Fill(GuardByte);
            Fill(block.User, bytes, FreshByte);
            new Span<byte>(block.User + bytes, GuardBytes).Fill(GuardByte);
            _live.Insert(~_live.BinarySearch(block, StartOrder.Instance), block);
            _bytesInUse += bytes;
            _peak = Math.Max(_peak, _bytesInUse);
            return new DevicePtr(block.Start);
        }
    }

    /// <inheritdoc />
    public void Free(DevicePtr pointer)
    {
        lock (_gate)
        {
            ThrowIfDisposed(nameof(Free));
            int i = IndexOfStart(pointer.Address);
            if (i < 0)
            {
                if (FindFreed(pointer.Address, 1) is { } freed && freed.Start == pointer.Address)
                    throw new EmulatedDeviceException(nameof(Free), $"{pointer} was already freed ({freed})");
                string where = Find(pointer.Address) is { } inside ? $"it is inside {inside}, not its start" : "it was not returned by Allocate";
                throw new EmulatedDeviceException(nameof(Free), $"cannot free {pointer}: {where}");
            }
            Block block = _live[i];
            _live.RemoveAt(i);
            _bytesInUse -= block.Length;
            // Report damage before the evidence is poisoned; the memory is still quarantined so the state stays consistent.
            string? damage = GuardDamage(block);
            Quarantine(block);
            if (damage is not null)
                throw new EmulatedDeviceException(nameof(Free), $"{block} was written out of bounds before it was freed: {damage}");
        }
    }

    /// <inheritdoc />
    public void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(CopyToDevice), stream);
            byte* p = Check(nameof(CopyToDevice), destination, source.Length);
            source.CopyTo(new Span<byte>(p, source.Length));
        }
    }

    /// <inheritdoc />
    public void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(CopyToHost), stream);
            byte* p = Check(nameof(CopyToHost), source, destination.Length);
            new ReadOnlySpan<byte>(p, destination.Length).CopyTo(destination);
        }
    }

    /// <inheritdoc />
    public void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(Fill), stream);
            byte* p = Check(nameof(Fill), pointer, bytes);
            Fill(p, bytes, value);
        }
    }

    /// <inheritdoc />
    public void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers)
    {
        ArgumentNullException.ThrowIfNull(kernelName);
        lock (_gate)
        {
            CheckStream(nameof(Launch), stream);
            try
            {
                EmulatorNative.LaunchChecked(kernelName, (grid.X, grid.Y, grid.Z), (block.X, block.Y, block.Z), dynamicSharedBytes, argPointers);
            }
            catch (InvalidOperationException e)
            {
                throw new EmulatedDeviceException(nameof(Launch), e.Message, kernelName, e);
            }
            CheckAfterLaunch(kernelName);
        }
    }

    /// <summary>Launches run synchronously, so by the time this is called every error has already been thrown.</summary>
    public void Synchronize(DeviceStream stream)
    {
        lock (_gate) CheckStream(nameof(Synchronize), stream);
    }

    /// <summary>Frees every live and quarantined allocation. Pointers handed out before become invalid.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (Block b in _live) NativeMemory.AlignedFree(b.Base);
            foreach (Block b in _quarantine) NativeMemory.AlignedFree(b.Base);
            _live.Clear();
            _quarantine.Clear();
            _bytesInUse = 0;
            _quarantined = 0;
        }
    }

    // Every live allocation's guards, and every quarantined allocation's poison, must be intact after a kernel:
    // the emulator runs kernels on raw host addresses, so this is where an out-of-bounds store becomes visible.
    private void CheckAfterLaunch(string kernel)
    {
        foreach (Block b in _live)
        {
            if (GuardDamage(b) is not { } damage) continue;
            RepairGuards(b); // report once: the next launch should not blame its kernel for this one's store
            throw new EmulatedDeviceException(nameof(Launch), $"kernel {kernel} wrote out of bounds of {b}: {damage}", kernel);
        }
        foreach (Block b in _quarantine)
        {
            long at = IndexOfAnyExcept(b.Base, b.Length + 2 * GuardBytes, FreedByte);
            if (at < 0) continue;
            Fill(b.Base, b.Length + 2 * GuardBytes, FreedByte);
            throw new EmulatedDeviceException(nameof(Launch),
                $"kernel {kernel} wrote to freed memory: byte {at - GuardBytes} of freed {b}", kernel);
        }
    }

    private static string? GuardDamage(Block b)
    {
        int before = new ReadOnlySpan<byte>(b.Base, GuardBytes).LastIndexOfAnyExcept(GuardByte);
        if (before >= 0) return $"byte {before - GuardBytes} (before its start) was overwritten";
        int after = new ReadOnlySpan<byte>(b.User + b.Length, GuardBytes).IndexOfAnyExcept(GuardByte);
        if (after >= 0) return $"byte {b.Length + after} (offset {after} past its end) was overwritten";
        return null;
    }

    private static void RepairGuards(Block b)
    {
        new Span<byte>(b.Base, GuardBytes).Fill(GuardByte);
        new Span<byte>(b.User + b.Length, GuardBytes).Fill(GuardByte);
    }

    private void Quarantine(Block block)
    {
        long span = block.Length + 2 * GuardBytes;
        Fill(block.Base, span, FreedByte);
        _quarantine.AddLast(block);
        _quarantined += span;
        // Release the oldest first: a dangling pointer is most likely to be used soon after its free.
        while (_quarantined > _quarantineLimit && _quarantine.First is { } oldest)
        {
            _quarantine.RemoveFirst();
            _quarantined -= oldest.Value.Length + 2 * GuardBytes;
            NativeMemory.AlignedFree(oldest.Value.Base);
        }
    }

    // The host address of [pointer, pointer + bytes), refused unless the range lies inside one live allocation.
    private byte* Check(string call, DevicePtr pointer, long bytes)
    {
        ThrowIfDisposed(call);
        if (bytes < 0) throw new EmulatedDeviceException(call, $"byte count must not be negative, got {bytes}");
        ulong a = pointer.Address;
        if (Find(a) is { } block)
        {
            if (bytes > (long)(block.End - a))
                throw new EmulatedDeviceException(call,
                    $"{bytes} bytes at {pointer} (offset {a - block.Start}) cross the end of {block} by {bytes - (long)(block.End - a)} bytes");
            return (byte*)a;
        }
        if (FindFreed(a, 1) is { } freed)
            throw new EmulatedDeviceException(call, $"use after free: {pointer} is inside freed {freed}");
        throw new EmulatedDeviceException(call, $"{pointer} is inside no live allocation");
    }

    private Block? Find(ulong address)
    {
        // The last allocation starting at or before the address is the only one that can contain it.
        int lo = 0, hi = _live.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_live[mid].Start <= address) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found >= 0 && address < _live[found].End ? _live[found] : null;
    }

    private int IndexOfStart(ulong address)
    {
        int lo = 0, hi = _live.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            ulong s = _live[mid].Start;
            if (s == address) return mid;
            if (s < address) lo = mid + 1; else hi = mid - 1;
        }
        return -1;
    }

    private Block? FindFreed(ulong address, long bytes)
    {
        foreach (Block b in _quarantine)
            if (address < b.End && address + (ulong)bytes > b.Start) return b;
        return null;
    }

    private static long IndexOfAnyExcept(byte* p, long bytes, byte value)
    {
        // Span lengths are int; device buffers may exceed 2 GiB.
        for (long done = 0; done < bytes;)
        {
            int n = (int)Math.Min(bytes - done, int.MaxValue);
            int at = new ReadOnlySpan<byte>(p + done, n).IndexOfAnyExcept(value);
            if (at >= 0) return done + at;
            done += n;
        }
        return -1;
    }

    private static void Fill(byte* p, long bytes, byte value)
    {
        // Span lengths are int; device buffers may exceed 2 GiB.
        for (long done = 0; done < bytes;)
        {
            int n = (int)Math.Min(bytes - done, int.MaxValue);
            new Span<byte>(p + done, n).Fill(value);
            done += n;
        }
    }

    private void ThrowIfDisposed(string call)
    {
        if (_disposed) throw new EmulatedDeviceException(call, "the device has been disposed");
    }

    private sealed class StartOrder : IComparer<Block>
    {
        public static readonly StartOrder Instance = new();
        public int Compare(Block? x, Block? y) => x!.Start.CompareTo(y!.Start);
    }
}
