namespace Phi2Native.Cuda.Resources;

/// <summary>
/// How much shared memory a launch may ask for. A block's static (<c>__shared__</c>) and dynamic shared memory count
/// together: without opting in, the driver lets a function use 48 KiB in all (its default
/// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES is 48 KiB less the static size); past that the function's attribute
/// must be raised to the dynamic size first, and static plus dynamic may reach the device's opt-in limit
/// (227 KiB on sm_90, 163 KiB on sm_80).
/// </summary>
internal static class SharedMemoryRule
{
    /// <summary>Whether a launch of <paramref name="dynamicBytes"/> must raise the function's attribute first.</summary>
    public static bool NeedsOptIn(int staticBytes, int dynamicBytes) =>
        (long)staticBytes + dynamicBytes > GpuArchitecture.SharedPerBlockDefault;

    /// <summary>The most dynamic shared memory a function with <paramref name="staticBytes"/> may be launched with.</summary>
    public static int MaxDynamicBytes(int staticBytes, int optInLimit) => Math.Max(0, optInLimit - staticBytes);

    /// <summary>Throws unless static plus dynamic fits <paramref name="optInLimit"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">It does not fit; the message names the kernel and the figures.</exception>
    public static void Check(string kernelName, int staticBytes, int dynamicBytes, int optInLimit, string device)
    {
        if (dynamicBytes >= 0 && dynamicBytes <= MaxDynamicBytes(staticBytes, optInLimit)) return;
        throw new ArgumentOutOfRangeException(nameof(dynamicBytes), dynamicBytes,
            $"kernel {kernelName} has {staticBytes} bytes of static shared memory, so its dynamic shared memory must be " +
            $"0..{MaxDynamicBytes(staticBytes, optInLimit)} bytes on {device} (static + dynamic <= {optInLimit}, the device's opt-in limit per block)");
    }
}
