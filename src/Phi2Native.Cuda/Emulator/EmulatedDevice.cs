using Phi2Native.Cuda.Profiling;
using Phi2Native.Profiling;

namespace Phi2Native.Cuda.Emulator;

/// <summary>
/// A call on the <see cref="EmulatedDevice"/> was refused or a kernel misbehaved: an address outside every live
/// allocation, a range crossing an allocation's end, a use after free, a kernel that read or wrote out of bounds
/// or touched freed memory, or a launch the emulator failed. The message names the call (and for a launch, the
/// kernel).
/// </summary>
public sealed class EmulatedDeviceException : EngineFaultException
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
/// every allocation starts as 0xFF bytes (NaN in fp32, bf16 and fp16), so reading memory nobody wrote shows.
/// Each allocation is mapped so that it ends (its size rounded up to <see cref="Alignment"/>) right at an
/// inaccessible guard page, with another guard page before it: a kernel reading or writing past the end faults,
/// and the emulator fails the launch naming the kernel, block, thread, allocation and byte offset; so does one
/// reaching back to the page before the start. The few bytes between the user bytes and the guard pages hold
/// <see cref="GuardBits"/>, which reads as NaN and is checked after every launch and on free, so a store there
/// fails the launch too. Copies and fills are checked against the allocation they address. Freed memory is made
/// inaccessible and held in a quarantine (so its address cannot be reused while it is remembered): a copy from
/// it is refused and a kernel touching it fails its launch.
/// </summary>
/// <remarks>
/// Thread-safe: every call takes one lock (the emulator serializes launches process-wide anyway). Linux only, like
/// the emulator: memory comes from mmap, and libphi2emu's SIGSEGV handler, which passes every fault that is not an
/// emulated kernel's to the handler installed before it (the .NET runtime's).
/// </remarks>
public sealed unsafe partial class EmulatedDevice : IDeviceApi
{
    /// <summary>
    /// The alignment of every pointer <see cref="Allocate"/> returns, and the unit its size is rounded up to before
    /// the trailing guard page. Enough for 16-byte vector loads; cudaMalloc's 256 would leave up to 255 bytes past
    /// the end whose reads are not caught.
    /// </summary>
    internal const int Alignment = 16;

    /// <summary>The byte fresh memory is filled with: 0xFFFF... is a NaN in fp32, bf16 and fp16 alike.</summary>
    internal const byte FreshByte = 0xFF;

    /// <summary>
    /// The 16 bits (little-endian, at every even address) of the guard bytes around each allocation: a NaN in bf16
    /// and fp16, and 0x7FA57FA5 is one in fp32, so a load there shows as NaN; and neither 0xFF.. nor 0, so a store
    /// of the fresh-memory NaN or of zeros shows as damage.
    /// </summary>
    internal const ushort GuardBits = 0x7FA5;

    /// <summary>Default bound on quarantined (freed but still remembered) bytes.</summary>
    /// <remarks>Quarantined memory is given back to the host; only its address range stays reserved.</remarks>
    internal const long DefaultQuarantineBytes = 1L << 30;

    private readonly object _gate = new();
    private readonly EmulatorLibrary? _emulator;
    private readonly string? _kernelSourceDirectory;
    private readonly List<Block> _live = [];          // sorted by Start, for binary search of an address
    private readonly LinkedList<Block> _quarantine = new();
    private readonly long _quarantineLimit;
    private long _quarantined;
    private long _bytesInUse, _peak, _total;

    // CudaDevice's caching allocator run over made-up addresses beside the guarded mappings (ModelledDriverMemory), so
    // that a profile's driver allocations mean the same here as on a GPU; keyed by this device's pointer.
    private readonly Gpu.CachingAllocator _allocatorModel = new(new ModelledDriverMemory(), "the emulated device's allocator model");
    private readonly Dictionary<ulong, DevicePtr> _modelled = [];
    private bool _disposed;

    /// <summary>Creates an emulated device over the emulator the build made (the embedded kernels as they are).</summary>
    /// <param name="quarantineBytes">
    /// How many freed bytes stay inaccessible and remembered before the oldest addresses are released for reuse.
    /// Larger catches older dangling pointers; it costs address space, not memory (at most 4096 allocations are
    /// kept whatever the bound, since each is a kernel mapping).
    /// </param>
    public EmulatedDevice(long quarantineBytes = DefaultQuarantineBytes)
        : this(null, null, quarantineBytes)
    {
    }

    /// <summary>A device over <paramref name="emulator"/> (null: <see cref="EmulatorLibrary.Default"/>, bound at first use).</summary>
    internal EmulatedDevice(EmulatorLibrary? emulator, string? kernelSourceDirectory, long quarantineBytes = DefaultQuarantineBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(quarantineBytes);
        _quarantineLimit = quarantineBytes;
        _emulator = emulator;
        _kernelSourceDirectory = kernelSourceDirectory;
    }

    /// <summary>
    /// An emulated device whose kernels come from <paramref name="kernelSources"/>: with a folder set there (null reads
    /// <see cref="KernelSourceOptions.FromEnvironment"/>, i.e. <c>PHI2NATIVE_KERNEL_SOURCES</c>) whose files differ from
    /// the embedded ones, g++ builds an emulator library from them and the embedded others, once per set of sources
    /// (cached under <paramref name="kernelCache"/>'s folder, null reading <see cref="KernelCacheOptions.FromEnvironment"/>);
    /// the notice sink hears which files came from the folder. Otherwise the device runs the emulator the build made,
    /// as <see cref="EmulatedDevice(long)"/> does, but that library is loaded here, so a missing one is said at once.
    /// </summary>
    /// <exception cref="Phi2Exception">
    /// The folder is missing, holds no kernel files, or adds a kernel file (the emulator's table of entry points is
    /// written by hand); g++ is missing; or the emulator library does not load.
    /// </exception>
    /// <exception cref="KernelCompileException">g++ could not compile the sources; the message names the file and line.</exception>
    public static EmulatedDevice Open(KernelSourceOptions? kernelSources = null, KernelCacheOptions? kernelCache = null)
    {
        var sources = KernelSourceOverride.Load(kernelSources ?? KernelSourceOptions.FromEnvironment());
        if (sources is { ChangesAnything: true })
            return new EmulatedDevice(EmulatorBuilder.Shared.Build(sources, kernelCache ?? KernelCacheOptions.FromEnvironment()), sources.Directory);
        sources?.Options.Tell($"{sources.Describe()}; the emulator the build made runs them as they are");
        try
        {
            return new EmulatedDevice(EmulatorLibrary.Default, sources?.Directory);
        }
        catch (DllNotFoundException e)
        {
            throw new Phi2Exception(e.Message, e);
        }
    }

    // The library this device's memory is registered with and its kernels launched through.
    private EmulatorLibrary Emulator => _emulator ?? EmulatorLibrary.Default;

    /// <inheritdoc />
    /// <remarks>
    /// The emulator keeps no cache of reusable blocks: it reserves what it hands out (guard bands and the quarantine
    /// are checking overhead in host memory, not device memory), so reserved equals in use and there are no cache hits.
    /// </remarks>
    internal DeviceMemoryStatistics Memory
    {
        get { lock (_gate) return new DeviceMemoryStatistics(_bytesInUse, _peak, _live.Count - _heldForGraphs, _total, BytesReserved: _bytesInUse, PeakBytesReserved: _peak); }
    }

    /// <inheritdoc />
    internal DevicePtr Allocate(long bytes)
    {
        if (bytes <= 0) throw new EmulatedDeviceException(nameof(Allocate), $"size must be more than 0 bytes, got {bytes}");
        lock (_gate)
        {
            ThrowIfDisposed(nameof(Allocate));
            DevicePtr modelled;
            try
            {
                modelled = _allocatorModel.Allocate(bytes);
            }
            catch (InvalidOperationException) when (AnyCapture)
            {
                // The model's capture pool and cache could not serve it: on a GPU this would be cuMemAlloc inside a
                // global-mode capture, refused, and the capture invalidated.
                SpoilEveryCapture($"Allocate ({bytes} bytes that the caching allocator could not serve from its cache)");
                throw new EmulatedDeviceException(nameof(Allocate),
                    $"{bytes} bytes while a stream is capturing a graph need a driver allocation, which a capture cannot make: allocate before capturing");
            }
            Block block = MapBlock(bytes);
            NoteCaptureAllocation(block);
            _live.Insert(~_live.BinarySearch(block, StartOrder.Instance), block);
            _bytesInUse += bytes;
            _peak = Math.Max(_peak, _bytesInUse);
            _modelled.Add(block.Start, modelled);
            ProfileRecorder.Current?.BytesInUse(_bytesInUse);
            return new DevicePtr(block.Start);
        }
    }

    /// <inheritdoc />
    internal void Free(DevicePtr pointer)
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
            if (block.HeldForGraph) throw new EmulatedDeviceException(nameof(Free), $"{pointer} was already freed ({block}, kept mapped for a graph)");
            _bytesInUse -= block.Length;
            if (_modelled.Remove(block.Start, out var modelled)) _allocatorModel.Free(modelled);
            // Report damage before the evidence is unmapped; the memory is still quarantined so the state stays consistent.
            string? damage = GuardDamage(block);
            // A graph's block stays live (its replays write it) until the graph is destroyed.
            if (!KeepForGraph(block))
            {
                _live.RemoveAt(i);
                Quarantine(block);
            }
            if (damage is not null)
                throw new EmulatedDeviceException(nameof(Free), $"{block} was written out of bounds before it was freed: {damage}");
        }
    }

    /// <inheritdoc />
    internal void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(CopyToDevice), stream);
            RefuseWhileCapturing(nameof(CopyToDevice), stream, "copy from host memory");
            byte* p = Check(nameof(CopyToDevice), destination, source.Length);
            source.CopyTo(new Span<byte>(p, source.Length));
            ProfileRecorder.Current?.Copy(ProfileEventKind.CopyToDevice, nameof(CopyToDevice), source.Length);
        }
    }

    /// <inheritdoc />
    internal void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(CopyToHost), stream);
            RefuseWhileCapturing(nameof(CopyToHost), stream, "make the host wait for a copy to host memory");
            byte* p = Check(nameof(CopyToHost), source, destination.Length);
            new ReadOnlySpan<byte>(p, destination.Length).CopyTo(destination);
            if (ProfileRecorder.Current is { } recorder)
            {
                recorder.Copy(ProfileEventKind.CopyToHost, nameof(CopyToHost), destination.Length);
                recorder.HostSync(nameof(CopyToHost), always: true);
            }
        }
    }

    /// <inheritdoc />
    internal void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(Fill), stream);
            byte* p = Check(nameof(Fill), pointer, bytes);
            if (TryCapture(stream, "fill", nameof(Fill), s => Fill(pointer, value, bytes, s))) return;
            Fill(p, bytes, value);
            ProfileRecorder.Current?.Copy(ProfileEventKind.CopyOnDevice, nameof(Fill), bytes);
        }
    }

    /// <inheritdoc />
    internal void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers) =>
        Launch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers, KernelCost.Undeclared);

    /// <inheritdoc cref="Launch(string, Dim3, Dim3, int, DeviceStream, ReadOnlySpan{nint})" />
    /// <remarks>
    /// While a <see cref="ProfileRecorder"/> with <see cref="ProfileRecorder.CountTraffic"/> is open, the emulator also
    /// counts the bytes of device memory the launch really reads and writes, each byte once
    /// (<see cref="ProfileEvent.CountedBytes"/>), so a launcher's declared cost can be checked.
    /// </remarks>
    internal void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers,
        in KernelCost cost)
    {
        ArgumentNullException.ThrowIfNull(kernelName);
        var recorder = ProfileRecorder.Current;
        lock (_gate)
        {
            CheckStream(nameof(Launch), stream);
            if (TryCaptureLaunch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers, cost)) return;
            bool counting = recorder is { CountTraffic: true };
            (long Read, long Written)? traffic = null;
            try
            {
                if (counting) Emulator.CountTraffic(true);
                Emulator.LaunchChecked(kernelName, (grid.X, grid.Y, grid.Z), (block.X, block.Y, block.Z), dynamicSharedBytes, argPointers);
                if (counting) traffic = Emulator.LastTraffic();
            }
            catch (InvalidOperationException e)
            {
                // A failed launch may have stored out of bounds before it failed: say so, and repair the guards now
                // so that the next launch is not blamed.
                string message = GuardReport() is { } also ? $"{e.Message}; kernel {kernelName} also {also}" : e.Message;
                throw new EmulatedDeviceException(nameof(Launch), message, kernelName, e);
            }
            finally
            {
                if (counting) Emulator.CountTraffic(false);
            }
            if (GuardReport() is { } damage)
                throw new EmulatedDeviceException(nameof(Launch), $"kernel {kernelName} {damage}", kernelName);
            if (recorder is not null)
                recorder.Launch(ProfileEventKind.Kernel, kernelName, SeamRecording.LaunchDetail(grid, block, dynamicSharedBytes), cost).CountedBytes = traffic;
        }
    }

    /// <summary>Launches run synchronously, so by the time this is called every error has already been thrown.</summary>
    internal void Synchronize(DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(Synchronize), stream);
            RefuseWhileCapturing(nameof(Synchronize), stream, "make the host wait");
        }
        ProfileRecorder.Current?.HostSync(nameof(Synchronize), always: false);
    }

    /// <summary>Frees every live and quarantined allocation. Pointers handed out before become invalid.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (Block b in _live) Unmap(b);
            foreach (Block b in _quarantine) Unmap(b);
            _live.Clear();
            _quarantine.Clear();
            _modelled.Clear();
            _captures.Clear();
            _graphs.Clear();
            _graphMemory.Clear();
            _blockGraph.Clear();
            _allocatorModel.Dispose();
            _bytesInUse = 0;
            _quarantined = 0;
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
