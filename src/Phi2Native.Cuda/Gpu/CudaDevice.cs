using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// <see cref="IDeviceApi"/> over a real GPU through the CUDA driver API: the device's primary context (shared with
/// cuBLAS and anything else in the process), a caching allocator, non-blocking streams, timing events, copies through
/// pinned staging buffers, and kernels compiled from the embedded kernels/*.cu by NVRTC through a disk cache.
/// </summary>
/// <remarks>
/// <para>
/// Thread-safe: every call first makes the primary context current on the calling thread (cuCtxSetCurrent; the
/// current context is per thread and hosts such as NUnit call from many threads), and shared state is locked.
/// Disposing is not: dispose once, when no other call is running.
/// </para>
/// <para>
/// Errors: a failed driver call throws <see cref="CudaException"/> naming the call. Errors of asynchronous work
/// (a kernel's illegal address, say) surface at the next call that waits: <see cref="Synchronize"/>,
/// <see cref="CopyToHost"/>, <see cref="ElapsedMilliseconds"/>, an allocation waiting for memory, or
/// <see cref="Dispose"/>. Bad arguments throw <see cref="ArgumentException"/> naming the argument.
/// </para>
/// </remarks>
public sealed partial class CudaDevice : IDeviceApi
{
    private readonly CudaPrimaryContext _context;
    private readonly CachingAllocator _allocator;
    private readonly KernelCache _kernels;
    private readonly int _stagingChunkBytes;
    private bool _disposed;

    private CudaDevice(CudaPrimaryContext context, CudaDeviceInfo info, KernelCacheOptions kernelCache, KernelSourceCatalog kernelSources,
        int stagingChunkBytes)
    {
        _context = context;
        Info = info;
        _stagingChunkBytes = stagingChunkBytes;
        context.MakeCurrent();
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int optIn, CuDeviceAttribute.MaxSharedMemoryPerBlockOptin, context.Device));
        MaxSharedBytesPerBlock = optIn;
        _allocator = new CachingAllocator(new DriverMemory(this), Name);
        _kernels = new KernelCache(kernelSources, new NvrtcKernelCompiler(), info.Architecture, kernelCache);
    }

    /// <summary>
    /// Opens CUDA device <paramref name="ordinal"/>: retains its primary context (released by <see cref="Dispose"/>).
    /// Several devices opened on one ordinal share the context and its loaded kernels; each has its own allocator,
    /// streams and events.
    /// </summary>
    /// <param name="ordinal">The device's index, 0 for the first.</param>
    /// <param name="kernelCache">Where compiled kernels are cached; null reads <see cref="KernelCacheOptions.FromEnvironment"/>.</param>
    /// <param name="kernelSources">
    /// A folder of kernel sources to compile instead of the embedded ones, file by file (its notice sink hears which);
    /// null reads <see cref="KernelSourceOptions.FromEnvironment"/> (<c>PHI2NATIVE_KERNEL_SOURCES</c>).
    /// </param>
    /// <exception cref="Phi2Exception">CUDA is unavailable here (the message is the probe's reason), or the kernel source folder is missing or holds no kernel files.</exception>
    /// <exception cref="ArgumentOutOfRangeException">There is no device <paramref name="ordinal"/>.</exception>
    public static CudaDevice Open(int ordinal = 0, KernelCacheOptions? kernelCache = null, KernelSourceOptions? kernelSources = null) =>
        Open(ordinal, kernelCache, PinnedStagingBuffers.DefaultChunkBytes, kernelSources);

    /// <summary><see cref="Open(int, KernelCacheOptions?, KernelSourceOptions?)"/> with a chosen staging chunk (tests use small ones to cross chunk boundaries).</summary>
    internal static CudaDevice Open(int ordinal, KernelCacheOptions? kernelCache, int stagingChunkBytes, KernelSourceOptions? kernelSources = null)
    {
        var probe = CudaAvailability.Probe();
        if (!probe.IsAvailable) throw new Phi2Exception($"cannot open a CUDA device: {probe.Reason}");
        if (ordinal < 0 || ordinal >= probe.Devices.Count)
            throw new ArgumentOutOfRangeException(nameof(ordinal), ordinal, $"this machine has {probe.Devices.Count} CUDA device(s), numbered from 0");
        if (stagingChunkBytes <= 0 || stagingChunkBytes % 256 != 0)
            throw new ArgumentOutOfRangeException(nameof(stagingChunkBytes), stagingChunkBytes, "the chunk must be a positive multiple of 256 bytes");
        var sources = KernelSourceOverride.Load(kernelSources ?? KernelSourceOptions.FromEnvironment());
        var context = CudaPrimaryContext.Acquire(ordinal);
        try
        {
            var device = new CudaDevice(context, probe.Devices[ordinal], kernelCache ?? KernelCacheOptions.FromEnvironment(),
                sources?.Catalog ?? KernelSourceCatalog.Embedded, stagingChunkBytes);
            // NVRTC compiles a folder's files as it does the embedded ones: the cache key holds each source's text.
            sources?.Options.Tell($"{sources.Describe()}; NVRTC compiles them for {device.Name}");
            return device;
        }
        catch
        {
            context.Release();
            throw;
        }
    }

    /// <summary>What the driver says about the device.</summary>
    public CudaDeviceInfo Info { get; }

    /// <summary>"NVIDIA H200 (sm_90)".</summary>
    public string Name => $"{Info.Name} ({Info.Architecture})";

    /// <inheritdoc/>
    public Tensors.DeviceKind Kind => Tensors.DeviceKind.Cuda;

    /// <inheritdoc/>
    public int Ordinal => Info.Ordinal;

    /// <inheritdoc/>
    /// <remarks>Blocks freed while work that used them was still queued are given back only once that work is done.</remarks>
    internal long ReleaseCachedMemory(DeviceStream stream)
    {
        Synchronize(stream);
        return EmptyCache();
    }

    /// <summary>The most shared memory, static plus dynamic, one block may use after opting in (227 KiB on sm_90).</summary>
    internal int MaxSharedBytesPerBlock { get; }

    /// <summary>The kernel cache folder in use, or null when kernels are compiled without a disk cache.</summary>
    internal string? KernelCacheDirectory => _kernels.Directory;

    /// <summary>The kernel files (<c>elementwise.cu</c>, ...): the embedded ones, with a kernel source folder's laid over them.</summary>
    internal IReadOnlyList<string> KernelFiles => _kernels.Catalog.Files;

    /// <summary>The kernel cache (the GPU tests reach the images through it).</summary>
    internal KernelCache Kernels => _kernels;

    /// <inheritdoc />
    internal DeviceMemoryStatistics Memory => _allocator.Statistics;

    /// <inheritdoc />
    /// <remarks>From the caching allocator: see <see cref="CachingAllocator"/> for rounding, reuse and the out-of-memory retry.</remarks>
    /// <exception cref="DeviceOutOfMemoryException">The device is out of memory even after the cache was released.</exception>
    internal DevicePtr Allocate(long bytes)
    {
        if (bytes <= 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "an allocation must be more than 0 bytes");
        Enter();
        var pointer = _allocator.Allocate(bytes);
        Phi2Native.Profiling.ProfileRecorder.Current?.BytesInUse(_allocator.Statistics.BytesInUse);
        return pointer;
    }

    /// <inheritdoc />
    /// <remarks>The block is reused only after the work queued before this call, on every stream, has finished.</remarks>
    internal void Free(DevicePtr pointer)
    {
        Enter();
        _allocator.Free(pointer);
    }

    /// <summary>
    /// Returns the allocator's cached free blocks to the driver, after the work that may still use them has
    /// finished (for another process, or before measuring memory). Returns the bytes released.
    /// </summary>
    internal long EmptyCache()
    {
        Enter();
        return _allocator.EmptyCache();
    }

    /// <summary>
    /// Waits for all queued work, then disposes the cuBLAS handles and frees every allocation, the staging buffers,
    /// streams and events this object created, and releases the primary context (the last device on it unloads the kernels). An error of queued work
    /// is thrown after everything is released.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        Exception? first = null;
        void Try(Action action)
        {
            try { action(); }
            catch (Exception e) when (e is Phi2Exception or InvalidOperationException or ArgumentException) { first ??= e; }
        }
        Try(_context.MakeCurrent);
        Try(() => CudaDriver.Check(CudaDriver.cuCtxSynchronize()));
        // cuBLAS frees its workspace through this device, so it goes while the device still takes calls.
        Try(() => _blas?.Dispose());
        _disposed = true;
        Try(() => _staging?.Dispose());
        Try(_allocator.Dispose);
        Try(DestroyEventsAndStreams);
        Try(_context.Release);
        if (first is not null) throw first;
    }

    /// <summary>
    /// Makes this device's primary context current on the calling thread. Every member of this class does so itself;
    /// code that calls a CUDA library directly with this device's memory and streams (cuBLAS through CudaBlas, say)
    /// calls this first, since a thread that never set a context would otherwise get device 0's.
    /// </summary>
    internal void MakeCurrent() => Enter();

    /// <summary>Every public call starts here: refuse after dispose, then make the context current on this thread.</summary>
    private void Enter()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _context.MakeCurrent();
    }

    /// <summary>The allocator's driver: cuMemAlloc/cuMemFree, cuMemGetInfo, and fences of one event per live stream.</summary>
    private sealed class DriverMemory(CudaDevice device) : IRawDeviceMemory
    {
        public bool TryAllocate(long bytes, out ulong address)
        {
            var result = CudaDriver.cuMemAlloc(out address, (nuint)bytes);
            if (result == CuResult.ErrorOutOfMemory) return false;
            CudaDriver.Check(result, "cuMemAlloc");
            return true;
        }

        public void Free(ulong address) => CudaDriver.Check(CudaDriver.cuMemFree(address));

        public (long Free, long Total) QueryMemory()
        {
            CudaDriver.Check(CudaDriver.cuMemGetInfo(out nuint free, out nuint total));
            return ((long)free, (long)total);
        }

        public IAllocationFence RecordFence() => device.RecordFence();
    }
}
