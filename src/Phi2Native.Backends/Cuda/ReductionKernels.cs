using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Launchers for kernels/reduce.cu: the sum or the maximum of every row of a row-major [rows, cols] matrix of
/// F32, BF16 or F16, into an fp32 [rows] vector. One block per row; the block is the row's columns rounded up to
/// whole warps, at most <see cref="LaunchShape.MaxRowBlock"/> threads.
/// </summary>
internal static unsafe class ReductionKernels
{
    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary>y[r] = sum over c of x[r, c], accumulated in fp32. x is [rows, cols] of <paramref name="dtype"/>, y is fp32 [rows].</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">rows or cols is not positive.</exception>
    public static void RowSum(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, int rows, int cols, DeviceStream stream = default) =>
        Launch("row_sum", device, dtype, x, y, rows, cols, stream);

    /// <summary>y[r] = max over c of x[r, c] (NaN when the row holds one). x is [rows, cols] of <paramref name="dtype"/>, y is fp32 [rows].</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">rows or cols is not positive.</exception>
    public static void RowMax(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, int rows, int cols, DeviceStream stream = default) =>
        Launch("row_max", device, dtype, x, y, rows, cols, stream);

    private static void Launch(string op, IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, int rows, int cols, DeviceStream stream)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For(op, dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, DType.F32, nameof(y));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cols);
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&rows), (nint)(&cols) };
        // x read, one fp32 per row written; one add or max an element.
        long elements = (long)rows * cols;
        device.Launch(kernel, new Dim3((uint)rows), LaunchShape.RowBlock(cols), 0, stream, new ReadOnlySpan<nint>(args, 4),
            new KernelCost(elements * dtype.SizeInBytes(), rows * (long)sizeof(float), 0, elements));
    }
}
