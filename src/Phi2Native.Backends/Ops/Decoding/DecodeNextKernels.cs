using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Decoding;

/// <summary>Launchers for kernels/decode.cu (its contract is in its header), and <see cref="DecodeNextOp"/> on the CUDA backend.</summary>
internal static unsafe class DecodeNextKernels
{
    /// <summary>Threads per block: decode.cu's PHI2_DECODE_NEXT_THREADS (its tree reduction needs this power of two).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary>
    /// Launches decode_next_{dtype}: each row's greedy id into <paramref name="ids"/> (when <paramref name="logits"/> is
    /// not null), then <paramref name="offsets"/> and <paramref name="keyTimes"/> (each optional) advanced by one.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or logits given without ids.</exception>
    /// <exception cref="ArgumentOutOfRangeException">rows or vocab is not positive.</exception>
    public static void DecodeNext(IDeviceApi device, DType dtype, DevicePtr logits, DevicePtr ids, DevicePtr offsets, DevicePtr keyTimes,
        int rows, int vocab, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("decode_next", dtype, Supported);
        bool choose = LaunchArguments.OptionalPointer(logits, dtype, nameof(logits));
        if (choose) LaunchArguments.Pointer(ids, DType.I32, nameof(ids));
        else LaunchArguments.OptionalPointer(ids, DType.I32, nameof(ids));
        int advanced = (LaunchArguments.OptionalPointer(offsets, DType.I32, nameof(offsets)) ? 1 : 0)
            + (LaunchArguments.OptionalPointer(keyTimes, DType.I32, nameof(keyTimes)) ? 1 : 0);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocab);
        if (choose) BufferOverlap.RequireNone(logits, (long)rows * vocab * dtype.SizeInBytes(), ids, (long)rows * sizeof(int), nameof(logits), nameof(ids));
        nint* args = stackalloc nint[] { (nint)(&logits), (nint)(&ids), (nint)(&offsets), (nint)(&keyTimes), (nint)(&rows), (nint)(&vocab) };
        long scanned = choose ? (long)rows * vocab : 0;
        long ints = (long)rows * sizeof(int);
        device.Launch(kernel, new Dim3((uint)rows), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 6),
            new KernelCost(scanned * dtype.SizeInBytes() + advanced * ints, (choose ? ints : 0) + advanced * ints, 0, scanned));
    }
}
