using Phi2Native.Cuda;

namespace Phi2Native.Backends.Cuda;

/// <summary>Overlap checks of the launchers whose kernels read one buffer and write another of the same size.</summary>
internal static class BufferOverlap
{
    /// <summary>Whether [a, a + bytes) and [b, b + bytes) share a byte.</summary>
    public static bool Overlaps(DevicePtr a, long aBytes, DevicePtr b, long bBytes) =>
        aBytes > 0 && bBytes > 0 && a.Address < b.Address + (ulong)bBytes && b.Address < a.Address + (ulong)aBytes;

    /// <summary>
    /// Allows the output to be the input itself (in place, for kernels where each element is read before it is written,
    /// by the same thread) or apart from it; refuses a partial overlap, which would race.
    /// </summary>
    /// <exception cref="ArgumentException">The buffers partly overlap; names the output.</exception>
    public static void RequireExactOrNone(DevicePtr input, DevicePtr output, long bytes, string inputName, string outputName)
    {
        if (input != output && Overlaps(input, bytes, output, bytes))
            throw new ArgumentException($"{outputName} ({output}) partly overlaps {inputName} ({input}): pass the same pointer (in place) or separate memory", outputName);
    }

    /// <summary>Refuses any overlap of the output with the input (kernels whose threads read what others write).</summary>
    /// <exception cref="ArgumentException">The buffers overlap; names the output.</exception>
    public static void RequireNone(DevicePtr input, long inputBytes, DevicePtr output, long outputBytes, string inputName, string outputName)
    {
        if (Overlaps(input, inputBytes, output, outputBytes))
            throw new ArgumentException($"{outputName} ({output}) overlaps {inputName} ({input}): the kernel needs separate memory", outputName);
    }
}
