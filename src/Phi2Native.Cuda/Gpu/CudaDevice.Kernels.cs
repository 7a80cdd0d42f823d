using Phi2Native.Cuda.Native;
using Phi2Native.Cuda.Profiling;
using Phi2Native.Cuda.Resources;
using Phi2Native.Profiling;

namespace Phi2Native.Cuda.Gpu;

// Kernels: found by name in the device's kernel sources, compiled through the kernel cache, loaded once per context, launched.
public sealed partial class CudaDevice
{
    /// <inheritdoc />
    /// <remarks>
    /// The first launch of a kernel compiles its file (or reads it from the disk cache) and loads the module into the
    /// context; later launches find the function in a table. Static and dynamic shared memory count together
    /// (<see cref="SharedMemoryRule"/>): a launch whose sum passes 48 KiB raises the kernel's
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first (once, unless a later launch asks for more still), and
    /// one past the device's opt-in limit throws here, naming both sizes.
    /// Launch errors (a bad shape, too many resources) throw here; faults of the running kernel surface at the next
    /// call that waits, such as <see cref="Synchronize"/>.
    /// </remarks>
    /// <exception cref="ArgumentException">No kernel of the device's sources has that name, or a shape or size is invalid.</exception>
    /// <exception cref="KernelCompileException">The kernel's file does not compile.</exception>
    internal void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers) =>
        Launch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers, KernelCost.Undeclared);

    /// <inheritdoc cref="Launch(string, Dim3, Dim3, int, DeviceStream, ReadOnlySpan{nint})" />
    /// <remarks>While a <see cref="ProfileRecorder"/> is open, an event pair around the launch measures it on the GPU.</remarks>
    internal unsafe void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers,
        in KernelCost cost)
    {
        ArgumentNullException.ThrowIfNull(kernelName);
        if (grid.Count == 0) throw new ArgumentException($"grid {grid} has a zero extent", nameof(grid));
        if (block.Count == 0) throw new ArgumentException($"block {block} has a zero extent", nameof(block));
        if (dynamicSharedBytes < 0 || dynamicSharedBytes > MaxSharedBytesPerBlock)
            throw new ArgumentOutOfRangeException(nameof(dynamicSharedBytes), dynamicSharedBytes,
                $"dynamic shared memory must be 0..{MaxSharedBytesPerBlock} bytes on {Name}");
        Enter();
        CheckStream(stream, nameof(stream));
        var function = _context.GetFunction(_kernels.Catalog.Identity, kernelName, _kernels.Catalog.FileOf, file => _kernels.GetImage(file).Image);
        SharedMemoryRule.Check(kernelName, function.StaticSharedBytes, dynamicSharedBytes, MaxSharedBytesPerBlock, Name);
        if (SharedMemoryRule.NeedsOptIn(function.StaticSharedBytes, dynamicSharedBytes) && dynamicSharedBytes > function.DynamicSharedLimit)
        {
            lock (function)
            {
                if (dynamicSharedBytes > function.DynamicSharedLimit)
                {
                    CudaDriver.Check(CudaDriver.cuFuncSetAttribute(function.Handle, CuFunctionAttribute.MaxDynamicSharedSizeBytes, dynamicSharedBytes));
                    function.DynamicSharedLimit = dynamicSharedBytes;
                }
            }
        }
        var recorder = ProfileRecorder.Current;
        DeviceEvent? start = recorder is null ? null : SeamRecording.Begin(this, stream);
        CuResult result;
        fixed (nint* args = argPointers)
        {
            result = CudaDriver.cuLaunchKernel(function.Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z,
                (uint)dynamicSharedBytes, stream.Handle, (void**)args, null);
        }
        if (result != CuResult.Success)
        {
            var (name, text) = CudaDriver.Describe(result);
            throw new CudaException(CudaException.DriverLibrary, "cuLaunchKernel", (int)result, name, text,
                $"kernel {kernelName}, grid {grid}, block {block}, {dynamicSharedBytes} bytes of dynamic shared memory, " +
                $"{argPointers.Length} argument(s), stream {stream.Handle}");
        }
        recorder?.Launch(ProfileEventKind.Kernel, kernelName, SeamRecording.LaunchDetail(grid, block, dynamicSharedBytes), cost,
            SeamRecording.End(this, stream, start));
    }

    /// <summary>
    /// Compiles (or reads from the cache) kernel file <paramref name="fileName"/> and loads it into the context unless
    /// it is loaded already: what the GPU runner calls for each file, to report compile times and errors up front.
    /// </summary>
    /// <exception cref="KernelCompileException">The file does not compile; the exception carries NVRTC's log.</exception>
    internal KernelImage LoadKernelFile(string fileName)
    {
        Enter();
        KernelImage image = _kernels.GetImage(fileName);
        _context.EnsureModule(_kernels.Catalog.Identity, fileName, _ => image.Image);
        return image;
    }
}
