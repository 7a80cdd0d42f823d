using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Argument checks shared by the kernel launchers, so a bad argument fails in C# with its name instead of as a
/// fault (or, on the emulated device, a guard-band report) inside a kernel.
/// </summary>
internal static class LaunchArguments
{
    /// <summary>
    /// Requires a non-null pointer aligned to the element size of <paramref name="dtype"/> (a misaligned access
    /// faults on the GPU).
    /// </summary>
    /// <exception cref="ArgumentNullException">The pointer is null.</exception>
    /// <exception cref="ArgumentException">The pointer is misaligned.</exception>
    public static void Pointer(DevicePtr pointer, DType dtype, string argument)
    {
        if (pointer.IsNull) throw new ArgumentNullException(argument, $"{argument} must point at {dtype} device memory");
        OptionalPointer(pointer, dtype, argument);
    }

    /// <summary>Like <see cref="Pointer"/>, but null is allowed (an output that is not needed); returns whether it is non-null.</summary>
    public static bool OptionalPointer(DevicePtr pointer, DType dtype, string argument)
    {
        if (pointer.IsNull) return false;
        int size = dtype.SizeInBytes();
        if (pointer.Address % (ulong)size != 0)
            throw new ArgumentException($"{argument} ({pointer}) is not aligned to {size} bytes, the size of {dtype}", argument);
        return true;
    }

    /// <summary>Requires a device.</summary>
    public static void Device(IDeviceApi device) => ArgumentNullException.ThrowIfNull(device);
}
