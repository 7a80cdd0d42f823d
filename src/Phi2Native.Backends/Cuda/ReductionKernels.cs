using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Launchers for kernels/reduce.cu: the sum or the maximum of every row of a row-major [rows, cols] matrix of
/// F32, BF16 or F16, into an fp32 [rows] vector. One block per row; the block is the row's columns rounded up to
/// whole warps, at most <see cref="LaunchShape.MaxRowBlock"/> threads.
/// </summary>
public static unsafe class ReductionKernels
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
        device.Launch(kernel, new Dim3((uint)rows), LaunchShape.RowBlock(cols), 0, stream, new ReadOnlySpan<nint>(args, 4));
    }

    /// <summary>Threads per block of the first stage of <see cref="SumOfSquares"/>.</summary>
    public const uint SumOfSquaresBlockSize = 256;

    /// <summary>Blocks of the first stage of <see cref="SumOfSquares"/> at most: enough to fill an H200 several times over.</summary>
    public const int MaxSumOfSquaresBlocks = 1024;

    /// <summary>
    /// The first stage's blocks for <paramref name="n"/> elements, min(ceil(n / 256), 1024): a function of n alone, so
    /// the order of the additions, and the result, is the same on every run and device. It is also the number of fp32
    /// partials the workspace of <see cref="SumOfSquares"/> must hold when it is above 1.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static int SumOfSquaresBlocks(long n)
    {
        LaunchShape.Count(n, nameof(n));
        return (int)Math.Min((n + SumOfSquaresBlockSize - 1) / SumOfSquaresBlockSize, MaxSumOfSquaresBlocks);
    }

    /// <summary>
    /// result[0] = sum over i &lt; n of x[i]^2 in fp32 (the CPU backend's <see cref="IBackend.SumOfSquares"/>, for gradient
    /// norms), written (=); pass <c>results.Offset(4 * k)</c> to gather several tensors' sums into one vector for a final
    /// <see cref="RowSum"/>. Deterministic, in two stages without atomics: sum_of_squares_{dtype} with G =
    /// <see cref="SumOfSquaresBlocks"/>(n) blocks of 256 threads writes one partial per block into
    /// <paramref name="workspace"/>, then row_sum_f32 adds the G partials as one row [1, G] into result. When G is 1
    /// the single partial is the result: one launch, and the workspace is not touched (it may be null).
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32, BF16 or F16: x.</param>
    /// <param name="x">[n] the values.</param>
    /// <param name="result">fp32, one element: the sum.</param>
    /// <param name="workspace">fp32 [G] scratch for the partials, G = <see cref="SumOfSquaresBlocks"/>(n); must not overlap result; may be null when G is 1.</param>
    /// <param name="n">Elements, 1..2^31-1.</param>
    /// <param name="stream">The stream.</param>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or the workspace at the result.</exception>
    /// <exception cref="ArgumentNullException">A null x or result, or a null workspace when G is above 1.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void SumOfSquares(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr result, DevicePtr workspace, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("sum_of_squares", dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(result, DType.F32, nameof(result));
        int count = LaunchShape.Count(n, nameof(n));
        int blocks = SumOfSquaresBlocks(n);
        DevicePtr partial = result;
        if (blocks > 1)
        {
            LaunchArguments.Pointer(workspace, DType.F32, nameof(workspace));
            if (BufferOverlap.Overlaps(workspace, blocks * (long)sizeof(float), result, sizeof(float)))
                throw new ArgumentException($"the workspace ({blocks} floats at {workspace}) must not overlap the result ({result}): the last stage reads the one while writing the other", nameof(workspace));
            partial = workspace;
        }
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&partial), (nint)(&count) };
        device.Launch(kernel, new Dim3((uint)blocks), SumOfSquaresBlockSize, 0, stream, new ReadOnlySpan<nint>(args, 3));
        if (blocks > 1) RowSum(device, DType.F32, partial, result, 1, blocks, stream);
    }
}
