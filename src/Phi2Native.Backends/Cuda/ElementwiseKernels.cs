using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Launchers for kernels/elementwise.cu (each kernel's contract is in its header). Arguments travel exactly as
/// cuLaunchKernel's kernelParams: an array of pointers, element i pointing at parameter i's value (here, the method's own
/// parameters).
/// </summary>
internal static unsafe class ElementwiseKernels
{
    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary>Launches elementwise.cu's add_{dtype} over <paramref name="n"/> elements (contract in its header).</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void Add(IDeviceApi device, DType dtype, DevicePtr a, DevicePtr b, DevicePtr y, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("add", dtype, Supported);
        LaunchArguments.Pointer(a, dtype, nameof(a));
        LaunchArguments.Pointer(b, dtype, nameof(b));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        int count = LaunchShape.Count(n, nameof(n));
        nint* args = stackalloc nint[] { (nint)(&a), (nint)(&b), (nint)(&y), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4), KernelCost.Elementwise(n, dtype, 2, 1, 1));
    }

    /// <summary>Launches elementwise.cu's scale_{dtype} over <paramref name="n"/> elements (contract in its header).</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void Scale(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, float alpha, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("scale", dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        int count = LaunchShape.Count(n, nameof(n));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&alpha), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4), KernelCost.Elementwise(n, dtype, 1, 1, 1));
    }

    /// <summary>Launches elementwise.cu's accumulate_f32 over <paramref name="n"/> elements (contract in its header).</summary>
    /// <exception cref="ArgumentException">A dtype other than F32, a misaligned pointer, or y partly overlapping x (y = x is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void Accumulate(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("accumulate", dtype, DType.F32);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        int count = LaunchShape.Count(n, nameof(n));
        BufferOverlap.RequireExactOrNone(x, y, count * (long)sizeof(float), nameof(x), nameof(y));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 3),
            x == y ? KernelCost.Elementwise(n, dtype, 1, 1, 1) : KernelCost.Elementwise(n, dtype, 2, 1, 1));
    }

    /// <summary>Launches elementwise.cu's scale_by_{dtype} over <paramref name="n"/> elements: y = alpha[0] x with alpha in device memory (contract in its header).</summary>
    /// <exception cref="ArgumentException">A dtype other than F32 and BF16, a misaligned pointer, or y partly overlapping x (y = x is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void ScaleBy(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, DevicePtr alpha, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("scale_by", dtype, DType.F32, DType.BF16);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        LaunchArguments.Pointer(alpha, DType.F32, nameof(alpha));
        int count = LaunchShape.Count(n, nameof(n));
        BufferOverlap.RequireExactOrNone(x, y, count * (long)dtype.SizeInBytes(), nameof(x), nameof(y));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&alpha), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4),
            KernelCost.Elementwise(n, dtype, 1, 1, 1) with { BytesRead = n * dtype.SizeInBytes() + sizeof(float) });
    }

    /// <summary>Launches elementwise.cu's accumulate_scaled_f32 over <paramref name="n"/> elements: y += alpha[0] x with alpha in device memory (contract in its header).</summary>
    /// <exception cref="ArgumentException">A dtype other than F32, a misaligned pointer, or y overlapping x.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void AccumulateScaled(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, DevicePtr alpha, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("accumulate_scaled", dtype, DType.F32);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        LaunchArguments.Pointer(alpha, DType.F32, nameof(alpha));
        int count = LaunchShape.Count(n, nameof(n));
        BufferOverlap.RequireNone(x, count * (long)sizeof(float), y, count * (long)sizeof(float), nameof(x), nameof(y));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&alpha), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4),
            KernelCost.Elementwise(n, dtype, 2, 1, 2) with { BytesRead = 2 * n * sizeof(float) + sizeof(float) });
    }
}
