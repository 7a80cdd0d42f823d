using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>Launchers for kernels/cast.cu (its contract is in its header).</summary>
internal static unsafe class CastKernels
{
    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    /// <summary>The kernel converting <paramref name="from"/> to <paramref name="to"/>: <c>cast_{from}_{to}</c>, e.g. <c>cast_f32_bf16</c>.</summary>
    /// <exception cref="ArgumentException">The dtypes are equal (that is a copy), or one is not F32, BF16 or F16.</exception>
    public static string Name(DType from, DType to)
    {
        if (from == to) throw new ArgumentException($"a cast from {from} to itself is a copy (IDeviceApi.CopyOnDevice), not a kernel", nameof(to));
        return "cast_" + KernelName.Suffix(from) + "_" + KernelName.Suffix(to);
    }

    /// <summary>Launches cast.cu's <c>cast_{from}_{to}</c> over <paramref name="n"/> elements (contract in its header).</summary>
    /// <exception cref="ArgumentException">Equal or unsupported dtypes, or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void Cast(IDeviceApi device, DType from, DType to, DevicePtr x, DevicePtr y, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = Name(from, to);
        LaunchArguments.Pointer(x, from, nameof(x));
        LaunchArguments.Pointer(y, to, nameof(y));
        int count = LaunchShape.Count(n, nameof(n));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 3),
            new KernelCost(n * from.SizeInBytes(), n * to.SizeInBytes(), 0, 0));
    }
}
