using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Rotary;

/// <summary>Launchers for kernels/rotary.cu (each kernel's contract is in its header), and <see cref="RotaryOp"/> on the CUDA backend.</summary>
internal static unsafe class RotaryKernels
{
    /// <summary>The widest rotary part the kernels' shared cos/sin table takes (PHI2_ROTARY_MAX_HALF * 2 in rotary.cuh; rotary.cu and qkv.cu).</summary>
    public const int MaxRotaryDim = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary><see cref="RotaryOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor x, int rotaryDim, double theta, Tensor? positions)
    {
        var y = cuda.Allocate(x.Shape, x.DType, nameof(x));
        if (x.ElementCount > 0)
            Rotary(cuda.DeviceApi, x.DType, cuda.Pointer(x, nameof(x)), cuda.Pointer(y, "y"), cuda.OptionalPointer(positions, nameof(positions)),
                x.Size(0), x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, cuda.Stream);
        return y;
    }

    /// <summary><see cref="RotaryOp"/>'s backward on the CUDA backend, the contract checked.</summary>
    internal static void Backward(CudaBackend cuda, Tensor dOutput, Tensor dx, int rotaryDim, double theta, Tensor? positions)
    {
        if (dOutput.ElementCount > 0)
            RotaryBackward(cuda.DeviceApi, dOutput.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(dx, nameof(dx)),
                cuda.OptionalPointer(positions, nameof(positions)), dOutput.Size(0), dOutput.Size(1), dOutput.Size(2), dOutput.Size(3), rotaryDim, theta, cuda.Stream);
    }

    /// <summary>Launches rotary.cu's rotary_{dtype} (contract in its header) with at most <paramref name="maxBlocks"/> blocks: checks pass a small value so each block walks several rows.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, y partly overlapping x, or rowOffsets overlapping y.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than rowOffsets.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim or theta is out of range.</exception>
    public static void Rotary(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, DevicePtr rowOffsets, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, DeviceStream stream = default, int maxBlocks = int.MaxValue) =>
        Launch("rotary", device, dtype, x, y, rowOffsets, batch, time, heads, headDim, rotaryDim, theta, stream, maxBlocks, nameof(x), nameof(y));

    /// <summary>Launches rotary.cu's rotary_backward_{dtype} (contract in its header), with the arguments of <see cref="Rotary"/>.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, dX partly overlapping dY, or rowOffsets overlapping dX.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than rowOffsets.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim or theta is out of range.</exception>
    public static void RotaryBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr dX, DevicePtr rowOffsets, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, DeviceStream stream = default, int maxBlocks = int.MaxValue) =>
        Launch("rotary_backward", device, dtype, dY, dX, rowOffsets, batch, time, heads, headDim, rotaryDim, theta, stream, maxBlocks, nameof(dY), nameof(dX));

    private static void Launch(string op, IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, DevicePtr rowOffsets, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, DeviceStream stream, int maxBlocks, string xName, string yName)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For(op, dtype, Supported);
        LaunchArguments.Pointer(x, dtype, xName);
        LaunchArguments.Pointer(y, dtype, yName);
        LaunchArguments.OptionalPointer(rowOffsets, DType.I32, nameof(rowOffsets));
        CheckRotaryShape(batch, time, heads, headDim, rotaryDim, theta, maxBlocks);
        long rows = (long)batch * time;
        long rowElements = (long)heads * headDim;
        long items = (long)heads * (headDim - rotaryDim / 2);
        if (rows > int.MaxValue || rowElements > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(batch), "B * T and H * D must each fit in an int");
        BufferOverlap.RequireExactOrNone(x, y, rows * rowElements * dtype.SizeInBytes(), xName, yName);
        if (!rowOffsets.IsNull) BufferOverlap.RequireNone(rowOffsets, (long)batch * sizeof(int), y, rows * rowElements * dtype.SizeInBytes(), nameof(rowOffsets), yName);
        if (rows == 0) return;
        int rowCount = (int)rows;
        nint* args = stackalloc nint[]
        {
            (nint)(&x), (nint)(&y), (nint)(&rowOffsets), (nint)(&rowCount), (nint)(&time), (nint)(&heads), (nint)(&headDim), (nint)(&rotaryDim),
            (nint)(&theta),
        };
        long bytes = rows * rowElements * dtype.SizeInBytes();
        // x read and y written once (in place when y is x); the row offsets; 3 flops per rotated element.
        device.Launch(kernel, new Dim3((uint)Math.Min(rowCount, maxBlocks)), LaunchShape.RowBlock((int)items), 0, stream, new ReadOnlySpan<nint>(args, 9),
            new KernelCost(bytes + (rowOffsets.IsNull ? 0 : (long)batch * sizeof(int)), bytes, 0, 3 * rows * heads * rotaryDim));
    }

    /// <summary>
    /// The checks every rotary launcher makes (rotary.cu's and qkv.cu's): B, T not negative, H, D and the block cap
    /// positive, rotaryDim even and in [0, min(D, <see cref="MaxRotaryDim"/>)], theta finite and positive where anything rotates.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The first argument out of range, by name.</exception>
    internal static void CheckRotaryShape(int batch, int time, int heads, int headDim, int rotaryDim, double theta, int maxBlocks)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(time);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBlocks);
        if (rotaryDim < 0 || rotaryDim > headDim || rotaryDim % 2 != 0 || rotaryDim > MaxRotaryDim)
            throw new ArgumentOutOfRangeException(nameof(rotaryDim), rotaryDim, $"rotaryDim must be even and in [0, min(headDim = {headDim}, {MaxRotaryDim})]");
        if (rotaryDim > 0 && !(theta > 0 && double.IsFinite(theta)))
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "theta must be finite and > 0");
    }
}
