using System.Collections.Concurrent;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// A device's primary context, shared by every <see cref="CudaDevice"/> of this process on that device, with the
/// modules and functions loaded into it. The primary context is the one the CUDA runtime, cuBLAS and other
/// libraries use too, so memory and streams pass freely between them. Modules live as long as the context, so
/// they are kept here, not per <see cref="CudaDevice"/>: each kernel file is loaded once per process per context and
/// set of sources (<see cref="KernelSourceCatalog.Identity"/>: devices over edited kernel sources share the context,
/// not the modules, with devices over the embedded ones).
/// </summary>
/// <remarks>
/// Reference-counted on top of the driver's own count: the first <see cref="Acquire"/> of an ordinal retains the
/// primary context, the last <see cref="Release"/> unloads the modules and releases it (the driver destroys the
/// context when nothing else in the process retains it, which would leave any cached module handle dangling).
/// </remarks>
internal sealed class CudaPrimaryContext
{
    /// <summary>A loaded kernel, its static shared memory, and the dynamic shared memory it has been allowed so far.</summary>
    internal sealed class Function(string name, nint handle, int staticSharedBytes)
    {
        public string Name { get; } = name;
        public nint Handle { get; } = handle;

        /// <summary>CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: the kernel's <c>__shared__</c> variables, which count against the same limits as dynamic shared memory.</summary>
        public int StaticSharedBytes { get; } = staticSharedBytes;

        private int _dynamicSharedLimit;

        /// <summary>
        /// The CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES set so far; 0 while the driver's default (48 KiB less
        /// the static size) stands. Read without a lock by launches; written, under the function's lock, only after
        /// the attribute call returned.
        /// </summary>
        public int DynamicSharedLimit
        {
            get => Volatile.Read(ref _dynamicSharedLimit);
            set => Volatile.Write(ref _dynamicSharedLimit, value);
        }
    }

    private static readonly object Registry = new();
    private static readonly Dictionary<int, CudaPrimaryContext> ByOrdinal = [];

    private readonly object _moduleGate = new();
    private readonly Dictionary<(string Sources, string File), nint> _modules = [];
    private readonly ConcurrentDictionary<(string Sources, string Kernel), Function> _functions = new();
    private int _references;

    private CudaPrimaryContext(int ordinal, int device, nint handle)
    {
        Ordinal = ordinal;
        Device = device;
        Handle = handle;
    }

    /// <summary>The device ordinal.</summary>
    public int Ordinal { get; }

    /// <summary>The CUdevice.</summary>
    public int Device { get; }

    /// <summary>The CUcontext.</summary>
    public nint Handle { get; }

    /// <summary>Retains the primary context of <paramref name="ordinal"/> (or shares the one this process already holds).</summary>
    public static CudaPrimaryContext Acquire(int ordinal)
    {
        lock (Registry)
        {
            if (!ByOrdinal.TryGetValue(ordinal, out var context))
            {
                CudaDriver.Check(CudaDriver.cuDeviceGet(out int device, ordinal));
                CudaDriver.Check(CudaDriver.cuDevicePrimaryCtxRetain(out nint handle, device));
                context = new CudaPrimaryContext(ordinal, device, handle);
                ByOrdinal.Add(ordinal, context);
            }
            context._references++;
            return context;
        }
    }

    /// <summary>Makes the context current on the calling thread. Every device call starts with this: the current context is per thread.</summary>
    public void MakeCurrent() => CudaDriver.Check(CudaDriver.cuCtxSetCurrent(Handle));

    /// <summary>
    /// The loaded function <paramref name="kernelName"/> of the kernel sources <paramref name="sources"/> (a catalog's
    /// identity): found by name, its file's module loaded on first use with the image <paramref name="imageOf"/> gives
    /// for the file. Lock-free once loaded.
    /// </summary>
    public Function GetFunction(string sources, string kernelName, Func<string, string> fileOf, Func<string, byte[]> imageOf)
    {
        if (_functions.TryGetValue((sources, kernelName), out var known)) return known;
        string file = fileOf(kernelName); // throws for an unknown kernel before any lock is taken
        lock (_moduleGate)
        {
            if (_functions.TryGetValue((sources, kernelName), out known)) return known;
            nint module = LoadModule(sources, file, imageOf);
            CudaDriver.Check(CudaDriver.cuModuleGetFunction(out nint handle, module, kernelName));
            CudaDriver.Check(CudaDriver.cuFuncGetAttribute(out int staticShared, CuFunctionAttribute.SharedSizeBytes, handle));
            var function = new Function(kernelName, handle, staticShared);
            _functions[(sources, kernelName)] = function;
            return function;
        }
    }

    /// <summary>Loads <paramref name="file"/>'s module of <paramref name="sources"/> unless it is loaded already; returns whether this call loaded it.</summary>
    public bool EnsureModule(string sources, string file, Func<string, byte[]> imageOf)
    {
        lock (_moduleGate)
        {
            if (_modules.ContainsKey((sources, file))) return false;
            LoadModule(sources, file, imageOf);
            return true;
        }
    }

    private unsafe nint LoadModule(string sources, string file, Func<string, byte[]> imageOf)
    {
        if (_modules.TryGetValue((sources, file), out nint module)) return module;
        byte[] image = imageOf(file);
        fixed (byte* p = image) CudaDriver.Check(CudaDriver.cuModuleLoadData(out module, p));
        _modules.Add((sources, file), module);
        return module;
    }

    /// <summary>Drops one reference; the last unloads the modules and releases the primary context.</summary>
    public void Release()
    {
        lock (Registry)
        {
            if (--_references > 0) return;
            ByOrdinal.Remove(Ordinal);
            Exception? first = null;
            try
            {
                MakeCurrent();
                lock (_moduleGate)
                {
                    foreach (nint module in _modules.Values)
                    {
                        try { CudaDriver.Check(CudaDriver.cuModuleUnload(module)); }
                        catch (CudaException e) { first ??= e; }
                    }
                    _modules.Clear();
                    _functions.Clear();
                }
            }
            catch (CudaException e) { first ??= e; }
            try { CudaDriver.Check(CudaDriver.cuDevicePrimaryCtxRelease(Device)); }
            catch (CudaException e) { first ??= e; }
            if (first is not null) throw first;
        }
    }
}
