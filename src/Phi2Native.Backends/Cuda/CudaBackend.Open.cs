using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>
    /// A backend over GPU <paramref name="ordinal"/>, owning its <see cref="CudaDevice"/>: disposing the backend closes
    /// the device. Unlike <see cref="CudaDevice.Open(int, KernelCacheOptions?, KernelSourceOptions?)"/>, every reason the GPU cannot be opened is a
    /// <see cref="Phi2Exception"/>, so a command line can report it as bad input.
    /// </summary>
    /// <param name="ordinal">The GPU's index, 0 for the first.</param>
    /// <param name="kernelSources">
    /// A folder of kernel sources NVRTC compiles instead of the embedded ones, file by file; null reads
    /// <see cref="KernelSourceOptions.FromEnvironment"/> (<c>PHI2NATIVE_KERNEL_SOURCES</c>).
    /// </param>
    /// <param name="kernelCache">Where compiled kernels are cached; null reads <see cref="KernelCacheOptions.FromEnvironment"/>.</param>
    /// <exception cref="Phi2Exception">
    /// CUDA is unavailable here (the message carries the probe's reason), there is no GPU <paramref name="ordinal"/>, or the
    /// kernel source folder is missing or holds no kernel files.
    /// </exception>
    public static CudaBackend OpenGpu(int ordinal = 0, KernelSourceOptions? kernelSources = null, KernelCacheOptions? kernelCache = null)
    {
        var probe = CudaAvailability.Probe();
        if (!probe.IsAvailable) throw new Phi2Exception($"no CUDA device is usable here: {probe.Reason}");
        if (ordinal < 0 || ordinal >= probe.Devices.Count)
            throw new Phi2Exception($"there is no CUDA device {ordinal}: this machine has {probe.Devices.Count}, numbered from 0");
        var backend = Over(CudaDevice.Open(ordinal, kernelCache, kernelSources));
        // cuBLASLt does not document its GELU as gelu_new's tanh form, nor what DGELU multiplies: measured once here, and
        // LinearGeluOp and fc2's dx product then take the epilogues or their fallbacks. A probe that cannot run leaves
        // the fallbacks, which are always right.
        try
        {
            GeluEpilogueProbe.Apply(backend.DeviceApi);
            DGeluEpilogueProbe.Apply(backend.DeviceApi);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            backend.DeviceApi.Blas.GeluEpilogueIsGeluNew = false;
            backend.DeviceApi.Blas.DGeluEpilogueIsGeluNew = false;
        }
        return backend;
    }

    /// <summary>
    /// A backend over a new <see cref="EmulatedDevice"/> (the kernels run on the CPU through the emulator), owning it.
    /// Much slower than the CPU backend: it is for checking the CUDA path without a GPU. With a folder of kernel sources,
    /// g++ builds the emulator from them first (<see cref="EmulatedDevice.Open"/>).
    /// </summary>
    /// <param name="kernelSources">A folder of kernel sources to run instead of the embedded ones; null reads <c>PHI2NATIVE_KERNEL_SOURCES</c>.</param>
    /// <param name="kernelCache">Where an emulator built from such sources is cached; null reads <see cref="KernelCacheOptions.FromEnvironment"/>.</param>
    /// <exception cref="Phi2Exception">
    /// The emulator's library (libphi2emu.so, built with g++ beside this assembly) does not load, or the kernel source
    /// folder is missing, holds no kernel files or adds one, or does not compile (<see cref="KernelCompileException"/>).
    /// </exception>
    public static CudaBackend OpenEmulated(KernelSourceOptions? kernelSources = null, KernelCacheOptions? kernelCache = null) =>
        Over(EmulatedDevice.Open(kernelSources, kernelCache));

    private static CudaBackend Over(IDeviceApi device)
    {
        try
        {
            return new CudaBackend(device, ownsDevice: true);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }
}
