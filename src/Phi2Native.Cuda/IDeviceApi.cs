namespace Phi2Native.Cuda;

/// <summary>
/// An address in device memory (a CUdeviceptr). On the emulated device it is a host address; callers treat it
/// as opaque either way and only offset it within the allocation it came from.
/// </summary>
/// <remarks>
/// Laid out as one 64-bit value, exactly like a CUdeviceptr or a kernel's pointer parameter, so the address of a
/// <see cref="DevicePtr"/> local can go straight into a launch's argument pointers.
/// </remarks>
/// <param name="Address">The raw 64-bit device address; 0 is the null pointer.</param>
internal readonly record struct DevicePtr(ulong Address)
{
    /// <summary>The null device pointer (what a kernel sees as <c>nullptr</c>, e.g. "no gradient wanted").</summary>
    public static DevicePtr Null => default;

    /// <summary>Whether this is the null pointer.</summary>
    public bool IsNull => Address == 0;

    /// <summary>The pointer <paramref name="bytes"/> further on (a sub-buffer of the same allocation).</summary>
    public DevicePtr Offset(long bytes) => new(unchecked(Address + (ulong)bytes));

    /// <summary>Hexadecimal, as CUDA tools print device addresses.</summary>
    public override string ToString() => $"0x{Address:x}";
}

/// <summary>
/// A stream on which copies, fills and launches are ordered (a CUstream). <see cref="Default"/> is the legacy
/// default stream; <see cref="IDeviceApi.CreateStream"/> makes more.
/// </summary>
/// <param name="Handle">The native handle; 0 is the default stream.</param>
internal readonly record struct DeviceStream(nint Handle)
{
    /// <summary>The default stream (handle 0), which every device has without creating it.</summary>
    public static DeviceStream Default => default;
}

/// <summary>
/// A marker recorded on a stream (a CUevent): it completes when the work queued before it has, and two of them
/// time the work between them.
/// </summary>
/// <param name="Handle">The native handle (on the emulated device, an index into its own table).</param>
internal readonly record struct DeviceEvent(nint Handle);

/// <summary>
/// An instantiated CUDA graph (a CUgraphExec): the work captured from a stream between
/// <see cref="IDeviceApi.BeginCapture"/> and <see cref="IDeviceApi.EndCapture"/>, replayed as one launch.
/// </summary>
/// <param name="Handle">The native handle (on the emulated device, an index into its own table); 0 is none.</param>
internal readonly record struct DeviceGraph(nint Handle)
{
    /// <summary>No graph.</summary>
    public static DeviceGraph None => default;

    /// <summary>Whether this is <see cref="None"/>.</summary>
    public bool IsNone => Handle == 0;
}

/// <summary>A launch's grid or block extent, as cuLaunchKernel takes it.</summary>
/// <param name="X">Extent along x (at least 1).</param>
/// <param name="Y">Extent along y (at least 1).</param>
/// <param name="Z">Extent along z (at least 1).</param>
internal readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    /// <summary>X * Y * Z.</summary>
    public long Count => (long)X * Y * Z;

    /// <summary>A one-dimensional extent, so <c>Dim3 block = 256;</c> reads like CUDA's <c>dim3 block(256)</c>.</summary>
    public static implicit operator Dim3(uint x) => new(x);

    /// <summary>"(x,y,z)", as the emulator's messages print launch shapes.</summary>
    public override string ToString() => $"({X},{Y},{Z})";
}

/// <summary>How much device memory a device has handed out through <see cref="IDeviceApi.Allocate"/>, and how much it holds.</summary>
/// <param name="BytesInUse">Bytes in live allocations (as requested, without any padding or guard bands).</param>
/// <param name="PeakBytesInUse">The largest <paramref name="BytesInUse"/> has been since the device was created.</param>
/// <param name="LiveAllocations">Allocations not yet freed.</param>
/// <param name="TotalAllocations">Allocations made since the device was created.</param>
/// <param name="BytesReserved">
/// Bytes the device holds from its allocator underneath (the CUDA driver, or host memory on the emulated device):
/// live allocations after rounding, plus freed blocks a caching allocator keeps for reuse.
/// </param>
/// <param name="PeakBytesReserved">The largest <paramref name="BytesReserved"/> has been since the device was created.</param>
/// <param name="CacheHits">Allocations served from freed blocks instead of the allocator underneath (0 without a cache).</param>
internal readonly record struct DeviceMemoryStatistics(long BytesInUse, long PeakBytesInUse, int LiveAllocations, long TotalAllocations,
    long BytesReserved = 0, long PeakBytesReserved = 0, long CacheHits = 0);

/// <summary>
/// The seam between the CUDA backend and the machine: one instance per device, either the real GPU (over the
/// driver bindings) or <see cref="Emulator.EmulatedDevice"/> (over the kernel emulator), so the backend's launch code,
/// argument marshalling and buffer arithmetic run unchanged in CI without a GPU.
/// </summary>
/// <remarks>
/// Errors are reported as <see cref="Phi2Exception"/>s naming the call that failed. Copies, fills and launches
/// are ordered on their stream; <see cref="Synchronize"/> waits for them. Disposing frees every allocation.
/// A host opens a device (<see cref="Gpu.CudaDevice.Open(int, KernelCacheOptions?, KernelSourceOptions?)"/>,
/// <see cref="Emulator.EmulatedDevice"/>), hands it to the CUDA backend and reads what it is; the members that move
/// memory and launch kernels are internal (the launchers' corridor), so only this assembly's devices implement the seam.
/// </remarks>
public interface IDeviceApi : IDisposable
{
    /// <summary>Allocates <paramref name="bytes"/> (more than 0) of device memory, aligned to at least 16 bytes (any vector load; the real device gives cuMemAlloc's 256, the emulated one exactly 16 so that an allocation can end at a guard page). Its contents are undefined.</summary>
    internal DevicePtr Allocate(long bytes);

    /// <summary>Frees an allocation returned by <see cref="Allocate"/>; freeing anything else, or freeing twice, is an error.</summary>
    internal void Free(DevicePtr pointer);

    /// <summary>Copies <paramref name="source"/> to device memory at <paramref name="destination"/> (which may be inside an allocation).</summary>
    internal void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream);

    /// <summary>Copies <c>destination.Length</c> bytes of device memory at <paramref name="source"/> into <paramref name="destination"/>.</summary>
    internal void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream);

    /// <summary>Copies <paramref name="bytes"/> bytes of device memory from <paramref name="source"/> to <paramref name="destination"/> (the ranges must not overlap).</summary>
    internal void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream);

    /// <summary>Sets <paramref name="bytes"/> bytes at <paramref name="pointer"/> to <paramref name="value"/> (cuMemsetD8).</summary>
    internal void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream);

    /// <summary>
    /// Launches kernel <paramref name="kernelName"/> (an <c>extern "C"</c> entry point of kernels/*.cu).
    /// <paramref name="argPointers"/> is exactly cuLaunchKernel's kernelParams: element i is the address of
    /// parameter i's value (for a pointer parameter, the address of a <see cref="DevicePtr"/>).
    /// </summary>
    /// <remarks>A launch without a declared cost: the launchers declare theirs through the overload with a <see cref="Phi2Native.Profiling.KernelCost"/>.</remarks>
    internal void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers) =>
        Launch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers, Phi2Native.Profiling.KernelCost.Undeclared);

    /// <summary>
    /// Launches kernel <paramref name="kernelName"/> as the overload without a cost does, with the cost its launcher
    /// declares from its shapes (bytes read and written, tensor-core and SIMT flops), which the device records while a
    /// <see cref="Phi2Native.Profiling.ProfileRecorder"/> is open on the calling thread.
    /// </summary>
    internal void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers, in Phi2Native.Profiling.KernelCost cost);

    /// <summary>Waits until all work queued on <paramref name="stream"/> has finished, and reports its errors.</summary>
    internal void Synchronize(DeviceStream stream);

    /// <summary>Creates a stream that does not synchronize with the default stream; destroy it with <see cref="DestroyStream"/>.</summary>
    internal DeviceStream CreateStream();

    /// <summary>Destroys a stream from <see cref="CreateStream"/> once its queued work has finished; the default stream cannot be destroyed.</summary>
    internal void DestroyStream(DeviceStream stream);

    /// <summary>Records a timing event on <paramref name="stream"/>: it completes when the work queued before it has.</summary>
    internal DeviceEvent RecordEvent(DeviceStream stream);

    /// <summary>
    /// Milliseconds between two recorded events, waiting for <paramref name="end"/> to complete. On the emulated
    /// device this is host time, which says nothing about a GPU.
    /// </summary>
    internal float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end);

    /// <summary>Destroys an event from <see cref="RecordEvent"/>.</summary>
    internal void DestroyEvent(DeviceEvent deviceEvent);

    /// <summary>
    /// Starts capturing the work queued on <paramref name="stream"/> (a created stream, not the default one) into a
    /// graph instead of running it (cuStreamBeginCapture, global mode): kernel launches, matrix products, fills and
    /// device-to-device copies are recorded with their arguments' values as they are at the call. Whatever would make
    /// the host wait or move host memory (a copy to or from the host, a Synchronize) is refused and spoils the
    /// capture, and so is an allocation the device cannot serve without the driver (a caching allocator's miss).
    /// Memory the capture allocates or frees is reserved to the graph until it is destroyed (the caching allocator's
    /// graph pool): with <paramref name="pool"/> (a graph of this device, usually the one the capture will update) the
    /// capture allocates from that graph's pool; otherwise from a new one, which <see cref="EndCapture"/> gives its graph.
    /// </summary>
    /// <exception cref="Phi2Exception">The stream is the default one, unknown, or already capturing; or another stream is capturing.</exception>
    internal void BeginCapture(DeviceStream stream, DeviceGraph pool = default) =>
        throw new NotSupportedException($"{Name} does not capture graphs");

    /// <summary>
    /// Ends the capture on <paramref name="stream"/> and instantiates its graph (cuStreamEndCapture,
    /// cuGraphInstantiate). With <paramref name="reuse"/> (a graph of this device), the capture updates it in place
    /// when it has the same shape, the same kernels in the same order (cuGraphExecUpdate), and that graph is returned;
    /// otherwise <paramref name="reuse"/> is destroyed and a new graph returned.
    /// </summary>
    /// <exception cref="Phi2Exception">The stream is not capturing, or its capture was spoiled (the message says by what).</exception>
    internal DeviceGraph EndCapture(DeviceStream stream, DeviceGraph reuse = default) =>
        throw new NotSupportedException($"{Name} does not capture graphs");

    /// <summary>Queues every captured operation of <paramref name="graph"/> on <paramref name="stream"/>, in capture order, as one launch (cuGraphLaunch).</summary>
    /// <exception cref="Phi2Exception">An unknown or destroyed graph, or an unknown stream.</exception>
    internal void LaunchGraph(DeviceGraph graph, DeviceStream stream) =>
        throw new NotSupportedException($"{Name} does not capture graphs");

    /// <summary>Destroys a graph from <see cref="EndCapture"/> (cuGraphExecDestroy) and releases its memory pool; its queued launches still complete.</summary>
    internal void DestroyGraph(DeviceGraph graph) =>
        throw new NotSupportedException($"{Name} does not capture graphs");

    /// <summary>
    /// The device's matrix products (cuBLAS and cuBLASLt on a GPU, a checked CPU reference on the emulated device),
    /// ordered on the streams they are given like every other call. The device owns it and disposes of it.
    /// </summary>
    internal IBlas Blas { get; }

    /// <summary>What this device is, for logs and reports: e.g. "NVIDIA H200 (sm_90)" or "emulated (libphi2emu)".</summary>
    string Name { get; }

    /// <summary>
    /// Which kind of device this is, in the users' words: <see cref="Tensors.DeviceKind.Cuda"/> for a GPU,
    /// <see cref="Tensors.DeviceKind.Emulated"/> for the kernel emulator. The layers above ask this instead of testing
    /// the implementing type.
    /// </summary>
    Tensors.DeviceKind Kind { get; }

    /// <summary>The GPU's index (CUDA's device ordinal, <c>cuda:N</c>); 0 for a device that has no index of its own.</summary>
    int Ordinal => 0;

    /// <summary>
    /// Gives memory this device holds for reuse (a caching allocator's free blocks) back to what it allocates from,
    /// after the work queued on <paramref name="stream"/> that may still use it has finished; returns the bytes
    /// released. A device that caches nothing releases nothing.
    /// </summary>
    internal long ReleaseCachedMemory(DeviceStream stream) => 0;

    /// <summary>The device's allocation statistics right now.</summary>
    internal DeviceMemoryStatistics Memory { get; }
}
