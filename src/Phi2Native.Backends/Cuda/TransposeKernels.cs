using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>Launchers for kernels/transpose.cu (its contract is in its header).</summary>
internal static unsafe class TransposeKernels
{
    /// <summary>The tile's side (PHI2_TRANSPOSE_TILE in transpose.cu): also blockDim.x.</summary>
    public const uint Tile = 32;

    /// <summary>Rows of threads per block: each thread moves Tile / BlockRows elements of a tile each way.</summary>
    public const uint BlockRows = 8;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>Launches transpose.cu's transpose_{dtype} of x [rows, cols] (contract in its header); 0 rows or cols launches nothing.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or y overlapping x.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative size, or more rows than the grid's y extent covers.</exception>
    public static void Transpose(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, int rows, int cols, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("transpose", dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        long tilesDown = (rows + (long)Tile - 1) / Tile;
        // cuLaunchKernel's grid.y limit.
        if (tilesDown > 65535) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"at most {65535 * Tile} rows (the grid's y extent is 65535 tiles)");
        long bytes = (long)rows * cols * dtype.SizeInBytes();
        BufferOverlap.RequireNone(x, bytes, y, bytes, nameof(x), nameof(y));
        if (rows == 0 || cols == 0) return;
        long tilesAcross = (cols + (long)Tile - 1) / Tile;
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&rows), (nint)(&cols) };
        device.Launch(kernel, new Dim3((uint)tilesAcross, (uint)tilesDown), new Dim3(Tile, BlockRows), 0, stream, new ReadOnlySpan<nint>(args, 4),
            new KernelCost(bytes, bytes, 0, 0));
    }
}
