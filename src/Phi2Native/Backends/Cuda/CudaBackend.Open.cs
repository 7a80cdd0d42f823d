using Phi2Native.Cuda;

namespace Phi2Native.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>
    /// A backend over GPU <paramref name="ordinal"/>, owning its <see cref="CudaDevice"/>: disposing the backend closes
    /// the device. Unlike <see cref="CudaDevice.Open(int, KernelCacheOptions?)"/>, every reason the GPU cannot be opened is a
    /// <see cref="Phi2Exception"/>, so a command line can report it as bad input.
    /// </summary>
    /// <exception cref="Phi2Exception">CUDA is unavailable here (the message carries the probe's reason), or there is no GPU <paramref name="ordinal"/>.</exception>
    public static CudaBackend OpenGpu(int ordinal = 0)
    {
        var probe = CudaAvailability.Probe();
        if (!probe.IsAvailable) throw new Phi2Exception($"no CUDA device is usable here: {probe.Reason}");
        if (ordinal < 0 || ordinal >= probe.Devices.Count)
            throw new Phi2Exception($"there is no CUDA device {ordinal}: this machine has {probe.Devices.Count}, numbered from 0");
        return Over(CudaDevice.Open(ordinal));
    }

    /// <summary>
    /// A backend over a new <see cref="EmulatedDevice"/> (the kernels run on the CPU through the emulator), owning it.
    /// Much slower than the CPU backend: it is for checking the CUDA path without a GPU.
    /// </summary>
    /// <exception cref="Phi2Exception">The emulator's library (libphi2emu.so, built with g++ beside this assembly) does not load.</exception>
    public static CudaBackend OpenEmulated()
    {
        // The emulator is otherwise bound at the first launch, deep inside a forward; a missing library is said here.
        var emulator = NativeLibraryResolver.Load(NativeLibraryResolver.Emulator);
        if (emulator.Handle == 0) throw new Phi2Exception($"the kernel emulator cannot be loaded: {emulator.Failure}");
        return Over(new EmulatedDevice());
    }

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
