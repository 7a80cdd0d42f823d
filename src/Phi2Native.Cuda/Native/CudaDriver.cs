using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Phi2Native.Cuda.Native;

/// <summary>
/// CUresult, the status every CUDA driver call returns (cuda.h). Only the codes this engine can meet
/// are named; any other value still travels through <see cref="CudaDriver.Check"/> unchanged.
/// </summary>
internal enum CuResult
{
    Success = 0,
    ErrorInvalidValue = 1,
    ErrorOutOfMemory = 2,
    ErrorNotInitialized = 3,
    ErrorDeinitialized = 4,
    ErrorStubLibrary = 34,
    ErrorNoDevice = 100,
    ErrorInvalidDevice = 101,
    ErrorInvalidImage = 200,
    ErrorInvalidContext = 201,
    ErrorNoBinaryForGpu = 209,
    ErrorInvalidPtx = 218,
    ErrorUnsupportedPtxVersion = 222,
    ErrorInvalidSource = 300,
    ErrorFileNotFound = 301,
    ErrorInvalidHandle = 400,
    ErrorNotFound = 500,
    ErrorNotReady = 600,
    ErrorIllegalAddress = 700,
    ErrorLaunchOutOfResources = 701,
    ErrorLaunchTimeout = 702,
    ErrorLaunchFailed = 719,
    ErrorStreamCaptureUnsupported = 900,
    ErrorStreamCaptureInvalidated = 901,
    ErrorGraphExecUpdateFailure = 910,
    ErrorUnknown = 999,
}

/// <summary>CUdevice_attribute values the device layer reads (cuda.h).</summary>
internal enum CuDeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxSharedMemoryPerBlock = 8,
    WarpSize = 10,
    MultiprocessorCount = 16,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerBlockOptin = 97,
}

/// <summary>CUfunction_attribute values set on a kernel before launch (cuda.h).</summary>
internal enum CuFunctionAttribute
{
    /// <summary>CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: the function's static shared memory.</summary>
    SharedSizeBytes = 1,

    /// <summary>CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: needed to launch with more than 48 KiB of dynamic shared memory.</summary>
    MaxDynamicSharedSizeBytes = 8,
}

/// <summary>
/// The CUDA driver API (libcuda), bound with <c>LibraryImport</c>. Handles (CUcontext, CUmodule,
/// CUfunction, CUstream, CUevent) are <see cref="nint"/>; CUdevice is <see cref="int"/>; CUdeviceptr is
/// <see cref="ulong"/> (it is <c>unsigned long long</c> in cuda.h on every 64-bit platform).
/// </summary>
/// <remarks>
/// Entry points are the exported symbols that cuda.h's macros name for API version 12+/13
/// (<c>cuMemAlloc</c> is <c>cuMemAlloc_v2</c>, <c>cuDevicePrimaryCtxRelease</c> is <c>_v2</c>, and so on);
/// binding the unversioned names would pick the legacy 32-bit-size ABIs. Calls that have no
/// <c>_v2</c> (<c>cuMemsetD8Async</c>, <c>cuMemFreeHost</c>, <c>cuStreamCreate</c>, <c>cuLaunchKernel</c>)
/// keep their plain names. Every call returns <see cref="CuResult"/>; wrap it in <see cref="Check"/>.
/// <para>
/// Reviewed against the CUDA driver API reference (cuda.h of CUDA 12.x/13.0) for the device layer: every
/// signature here (argument order, <c>size_t</c> as <see cref="nuint"/>, <c>CUdeviceptr</c> as <see cref="ulong"/>,
/// <c>unsigned int</c> flags and grid/block sizes as <see cref="uint"/>, <c>int</c> attribute values), the
/// <c>_v2</c> entry points cuda.h maps the plain names to (cuDeviceTotalMem, cuDevicePrimaryCtxRelease,
/// cuMemGetInfo, cuMemAlloc, cuMemFree, cuMemAllocHost, the cuMemcpy family, cuMemsetD8, cuStreamDestroy,
/// cuEventDestroy), the enum values (CUdevice_attribute 1, 8, 10, 16, 75, 76, 97; CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
/// 8; CU_STREAM_NON_BLOCKING 1; CU_EVENT_DISABLE_TIMING 2) and the CUresult codes named in <see cref="CuResult"/>.
/// cuEventQuery was added for the allocator's fences and the staging buffers. Nothing needed fixing.
/// </para>
/// </remarks>
internal static unsafe partial class CudaDriver
{
    /// <summary>The logical library name the resolver maps to <c>libcuda.so.1</c>.</summary>
    internal const string Library = NativeLibraryResolver.Cuda;

    // The resolver must be in place before the first P/Invoke of this class binds its library.
    static CudaDriver() => NativeLibraryResolver.EnsureRegistered();

    // --- Initialization, version, errors -------------------------------------------------------

    [LibraryImport(Library)] internal static partial CuResult cuInit(uint flags);
    [LibraryImport(Library)] internal static partial CuResult cuDriverGetVersion(out int driverVersion);
    [LibraryImport(Library)] internal static partial CuResult cuGetErrorName(CuResult error, out nint name);
    [LibraryImport(Library)] internal static partial CuResult cuGetErrorString(CuResult error, out nint text);

    // --- Devices ---------------------------------------------------------------------------------

    [LibraryImport(Library)] internal static partial CuResult cuDeviceGetCount(out int count);
    [LibraryImport(Library)] internal static partial CuResult cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Library)] internal static partial CuResult cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Library)] internal static partial CuResult cuDeviceGetAttribute(out int value, CuDeviceAttribute attribute, int device);
    [LibraryImport(Library, EntryPoint = "cuDeviceTotalMem_v2")] internal static partial CuResult cuDeviceTotalMem(out nuint bytes, int device);

    // --- Primary context -------------------------------------------------------------------------

    [LibraryImport(Library)] internal static partial CuResult cuDevicePrimaryCtxRetain(out nint context, int device);
    [LibraryImport(Library, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] internal static partial CuResult cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Library)] internal static partial CuResult cuCtxSetCurrent(nint context);
    [LibraryImport(Library)] internal static partial CuResult cuCtxSynchronize();
    [LibraryImport(Library, EntryPoint = "cuMemGetInfo_v2")] internal static partial CuResult cuMemGetInfo(out nuint free, out nuint total);

    // --- Memory ----------------------------------------------------------------------------------

    [LibraryImport(Library, EntryPoint = "cuMemAlloc_v2")] internal static partial CuResult cuMemAlloc(out ulong devicePtr, nuint bytes);
    [LibraryImport(Library, EntryPoint = "cuMemFree_v2")] internal static partial CuResult cuMemFree(ulong devicePtr);
    [LibraryImport(Library, EntryPoint = "cuMemAllocHost_v2")] internal static partial CuResult cuMemAllocHost(out nint hostPtr, nuint bytes);
    [LibraryImport(Library)] internal static partial CuResult cuMemFreeHost(nint hostPtr);
    [LibraryImport(Library, EntryPoint = "cuMemcpyHtoD_v2")] internal static partial CuResult cuMemcpyHtoD(ulong dst, void* src, nuint bytes);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoH_v2")] internal static partial CuResult cuMemcpyDtoH(void* dst, ulong src, nuint bytes);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoD_v2")] internal static partial CuResult cuMemcpyDtoD(ulong dst, ulong src, nuint bytes);
    [LibraryImport(Library, EntryPoint = "cuMemcpyHtoDAsync_v2")] internal static partial CuResult cuMemcpyHtoDAsync(ulong dst, void* src, nuint bytes, nint stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoHAsync_v2")] internal static partial CuResult cuMemcpyDtoHAsync(void* dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Library, EntryPoint = "cuMemcpyDtoDAsync_v2")] internal static partial CuResult cuMemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Library, EntryPoint = "cuMemsetD8_v2")] internal static partial CuResult cuMemsetD8(ulong dst, byte value, nuint count);
    [LibraryImport(Library)] internal static partial CuResult cuMemsetD8Async(ulong dst, byte value, nuint count, nint stream);

    // --- Modules, functions, launch --------------------------------------------------------------

    /// <summary>Loads a cubin, fatbin or NUL-terminated PTX image already in host memory.</summary>
    [LibraryImport(Library)] internal static partial CuResult cuModuleLoadData(out nint module, void* image);
    [LibraryImport(Library)] internal static partial CuResult cuModuleUnload(nint module);
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial CuResult cuModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(Library)] internal static partial CuResult cuFuncSetAttribute(nint function, CuFunctionAttribute attribute, int value);
    [LibraryImport(Library)] internal static partial CuResult cuFuncGetAttribute(out int value, CuFunctionAttribute attribute, nint function);

    /// <summary>
    /// Launches <paramref name="function"/>. <paramref name="kernelParams"/> points to one pointer per
    /// kernel parameter, each pointing at the argument's value; <paramref name="extra"/> is null here.
    /// </summary>
    [LibraryImport(Library)]
    internal static partial CuResult cuLaunchKernel(nint function,
        uint gridDimX, uint gridDimY, uint gridDimZ, uint blockDimX, uint blockDimY, uint blockDimZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

    // --- Streams and events ----------------------------------------------------------------------

    [LibraryImport(Library)] internal static partial CuResult cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(Library, EntryPoint = "cuStreamDestroy_v2")] internal static partial CuResult cuStreamDestroy(nint stream);
    [LibraryImport(Library)] internal static partial CuResult cuStreamSynchronize(nint stream);
    [LibraryImport(Library)] internal static partial CuResult cuEventCreate(out nint e, uint flags);
    [LibraryImport(Library)] internal static partial CuResult cuEventRecord(nint e, nint stream);
    [LibraryImport(Library)] internal static partial CuResult cuEventSynchronize(nint e);
    /// <summary>Success when the event's work has finished, <see cref="CuResult.ErrorNotReady"/> while it has not; does not block.</summary>
    [LibraryImport(Library)] internal static partial CuResult cuEventQuery(nint e);
    // CUDA 13's cuda.h declares only cuEventElapsedTime_v2 (same signature); drivers older than CUDA 12.8 export
    // only the plain name. A LibraryImport binds at its first call, so the one never chosen is never looked up.
    [LibraryImport(Library, EntryPoint = EventElapsedTimeV2)] private static partial CuResult cuEventElapsedTimeV2(out float milliseconds, nint start, nint end);
    [LibraryImport(Library, EntryPoint = EventElapsedTimeV1)] private static partial CuResult cuEventElapsedTimeV1(out float milliseconds, nint start, nint end);
    [LibraryImport(Library, EntryPoint = "cuEventDestroy_v2")] internal static partial CuResult cuEventDestroy(nint e);

    // --- Graphs (stream capture) ---------------------------------------------------------------------
    // cuda.h (12.x/13.0) maps cuStreamBeginCapture to cuStreamBeginCapture_v2 (the one with a mode), cuGraphInstantiate
    // to cuGraphInstantiateWithFlags and cuGraphExecUpdate to cuGraphExecUpdate_v2 (a CUgraphExecUpdateResultInfo out).

    /// <summary>CU_STREAM_CAPTURE_MODE_GLOBAL: calls unsafe during any capture (cuMemAlloc, a sync) are refused process-wide.</summary>
    internal const int CaptureModeGlobal = 0;

    [LibraryImport(Library, EntryPoint = "cuStreamBeginCapture_v2")] internal static partial CuResult cuStreamBeginCapture(nint stream, int mode);
    [LibraryImport(Library)] internal static partial CuResult cuStreamEndCapture(nint stream, out nint graph);
    [LibraryImport(Library)] internal static partial CuResult cuGraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);
    [LibraryImport(Library)] internal static partial CuResult cuGraphLaunch(nint graphExec, nint stream);
    [LibraryImport(Library, EntryPoint = "cuGraphExecUpdate_v2")] internal static partial CuResult cuGraphExecUpdate(nint graphExec, nint graph, out GraphExecUpdateResultInfo resultInfo);
    [LibraryImport(Library)] internal static partial CuResult cuGraphExecDestroy(nint graphExec);
    [LibraryImport(Library)] internal static partial CuResult cuGraphDestroy(nint graph);

    /// <summary>CUgraphExecUpdateResultInfo (cuda.h, _v1): the result (CUgraphExecUpdateResult, 0 = success) and the nodes that failed it.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct GraphExecUpdateResultInfo
    {
        public int Result;
        public nint ErrorNode;
        public nint ErrorFromNode;
    }

    /// <summary>The export cuda.h of CUDA 13 names for cuEventElapsedTime.</summary>
    internal const string EventElapsedTimeV2 = "cuEventElapsedTime_v2";
    /// <summary>The export of drivers older than CUDA 12.8 (newer ones keep it for old binaries).</summary>
    internal const string EventElapsedTimeV1 = "cuEventElapsedTime";

    private static readonly Lazy<string?> ElapsedTimeExportOnce = new(
        () => ChooseElapsedTimeExport(name => NativeLibraryResolver.HasExport(NativeLibraryResolver.Cuda, name)),
        LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// The milliseconds between two recorded events, through <see cref="EventElapsedTimeV2"/> where the driver
    /// exports it, else <see cref="EventElapsedTimeV1"/>; chosen once per process.
    /// </summary>
    /// <exception cref="EntryPointNotFoundException">The driver exports neither.</exception>
    internal static CuResult cuEventElapsedTime(out float milliseconds, nint start, nint end) => ElapsedTimeExportOnce.Value switch
    {
        EventElapsedTimeV2 => cuEventElapsedTimeV2(out milliseconds, start, end),
        EventElapsedTimeV1 => cuEventElapsedTimeV1(out milliseconds, start, end),
        _ => throw new EntryPointNotFoundException(
            $"the CUDA driver ({NativeLibraryResolver.Load(Library).LoadedFrom ?? "not loaded"}) exports neither {EventElapsedTimeV2} nor {EventElapsedTimeV1}"),
    };

    /// <summary>
    /// Which cuEventElapsedTime export to bind, given whether the driver has an export of a name: the <c>_v2</c> when
    /// present, else the plain one, else null.
    /// </summary>
    internal static string? ChooseElapsedTimeExport(Func<string, bool> hasExport) =>
        hasExport(EventElapsedTimeV2) ? EventElapsedTimeV2 : hasExport(EventElapsedTimeV1) ? EventElapsedTimeV1 : null;

    /// <summary>CU_STREAM_NON_BLOCKING: the stream does not synchronize with the legacy default stream.</summary>
    internal const uint StreamNonBlocking = 0x1;
    /// <summary>CU_EVENT_DEFAULT: a timing event.</summary>
    internal const uint EventDefault = 0x0;
    /// <summary>CU_EVENT_DISABLE_TIMING: a cheaper event used only for ordering.</summary>
    internal const uint EventDisableTiming = 0x2;

    // --- Checking --------------------------------------------------------------------------------

    /// <summary>
    /// Throws <see cref="CudaException"/> unless <paramref name="result"/> is success. The call is named
    /// from the argument expression, so <c>Check(cuMemAlloc(out p, n))</c> reports <c>cuMemAlloc</c>.
    /// </summary>
    internal static void Check(CuResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != CuResult.Success) throw Error(result, call);
    }

    /// <summary>Builds the exception for a failed call, asking the driver for the error's name and text.</summary>
    internal static CudaException Error(CuResult result, string call)
    {
        var (name, text) = Describe(result);
        return new CudaException(CudaException.DriverLibrary, CudaException.CallName(call), (int)result, name, text);
    }

    /// <summary>
    /// The driver's own name and text for <paramref name="result"/>; where the driver cannot say (not
    /// loaded, or an unknown code) the numeric value stands in, so describing an error never throws.
    /// </summary>
    internal static (string Name, string Text) Describe(CuResult result)
    {
        string? name = null, text = null;
        try
        {
            if (cuGetErrorName(result, out nint n) == CuResult.Success) name = Marshal.PtrToStringUTF8(n);
            if (cuGetErrorString(result, out nint t) == CuResult.Success) text = Marshal.PtrToStringUTF8(t);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return (name ?? CudaException.Fallback("CUresult", (int)result, typeof(CuResult)),
                text ?? "no description (cuGetErrorString unavailable)");
    }
}
