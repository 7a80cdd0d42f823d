using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Launchers for kernels/rotary.cu: Phi-2's partial rotary embedding (half-split, dims [0, rotaryDim) of each head of
/// x [B, T, H, D]; position of t = positionOffset + t) and its backward, in F32 or BF16, with the CPU backend's
/// angles (computed in double, cos and sin rounded once to fp32).
/// </summary>
public static unsafe class RotaryKernels
{
    /// <summary>The widest rotary part the kernel's shared cos/sin table takes (PHI2_ROTARY_MAX_HALF * 2 in rotary.cu).</summary>
    public const int MaxRotaryDim = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>
    /// Rotates dims [0, rotaryDim) of every head of x [B, T, H, D] by its position's angles into y (=); dims
    /// [rotaryDim, D) are copied. Launch: grid (B * T, at most maxBlocks), block <see cref="LaunchShape.RowBlock"/>(H * (D - rotaryDim / 2)),
    /// no dynamic shared memory.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32 or BF16: x and y.</param>
    /// <param name="x">[B, T, H, D] input (q or k after the head split).</param>
    /// <param name="y">[B, T, H, D] output; may be x itself, but must not partly overlap it.</param>
    /// <param name="batch">B.</param>
    /// <param name="time">T.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D, at least 1.</param>
    /// <param name="rotaryDim">rd: even, in [0, min(D, <see cref="MaxRotaryDim"/>)]; 0 copies x.</param>
    /// <param name="theta">rope_theta, finite and &gt; 0 (10000 for Phi-2).</param>
    /// <param name="positionOffset">The position of t = 0 (the KV-cache length when decoding), at least 0.</param>
    /// <param name="stream">The stream.</param>
    /// <param name="maxBlocks">The grid's cap (default: one block per token row); checks pass a small value so each block walks several rows.</param>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or y partly overlapping x.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim, theta or the offset is out of range.</exception>
    public static void Rotary(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, int batch, int time, int heads, int headDim,
        int rotaryDim, double theta, int positionOffset, DeviceStream stream = default, int maxBlocks = int.MaxValue) =>
        Launch("rotary", device, dtype, x, y, batch, time, heads, headDim, rotaryDim, theta, positionOffset, stream, maxBlocks, nameof(x), nameof(y));

    /// <summary>
    /// Gradient of <see cref="Rotary"/>: dX (=) is dY rotated back by the same angles (sin negated); the passed-through
    /// dims are copied. Same arguments and launch as forward; dX may be dY itself.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or dX partly overlapping dY.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim, theta or the offset is out of range.</exception>
    public static void RotaryBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr dX, int batch, int time, int heads, int headDim,
        int rotaryDim, double theta, int positionOffset, DeviceStream stream = default, int maxBlocks = int.MaxValue) =>
        Launch("rotary_backward", device, dtype, dY, dX, batch, time, heads, headDim, rotaryDim, theta, positionOffset, stream, maxBlocks, nameof(dY), nameof(dX));

    /// <summary>
    /// Per-row rotary (IBackend.RotaryPerRow): as <see cref="Rotary"/>, but token t of batch row b sits at position
    /// rowOffsets[b] + t. The offsets stay on the device: a row whose offset is negative (the CPU backend throws for it;
    /// the kernel cannot) gets a NaN output row and x's row is not read. Inference only (no backward). Launch as <see cref="Rotary"/>.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32 or BF16: x and y.</param>
    /// <param name="x">[B, T, H, D] input.</param>
    /// <param name="y">[B, T, H, D] output; may be x itself, but must not partly overlap it.</param>
    /// <param name="rowOffsets">I32 [B] device memory: each batch row's position of t = 0, at least 0; must not overlap y.</param>
    /// <param name="batch">B.</param>
    /// <param name="time">T.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D, at least 1.</param>
    /// <param name="rotaryDim">rd: even, in [0, min(D, <see cref="MaxRotaryDim"/>)]; 0 copies x.</param>
    /// <param name="theta">rope_theta, finite and &gt; 0.</param>
    /// <param name="stream">The stream.</param>
    /// <param name="maxBlocks">The grid's cap (default: one block per token row).</param>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, y partly overlapping x, or rowOffsets overlapping y.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim or theta is out of range.</exception>
    public static void RotaryPerRow(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, DevicePtr rowOffsets, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, DeviceStream stream = default, int maxBlocks = int.MaxValue)
    {
        LaunchArguments.Device(device);
        LaunchArguments.Pointer(rowOffsets, DType.I32, nameof(rowOffsets));
        Launch("rotary_per_row", device, dtype, x, y, batch, time, heads, headDim, rotaryDim, theta, 0, stream, maxBlocks, nameof(x), nameof(y), rowOffsets);
    }

    private static void Launch(string op, IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, int batch, int time, int heads, int headDim,
        int rotaryDim, double theta, int positionOffset, DeviceStream stream, int maxBlocks, string xName, string yName, DevicePtr rowOffsets = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For(op, dtype, Supported);
        LaunchArguments.Pointer(x, dtype, xName);
        LaunchArguments.Pointer(y, dtype, yName);
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(time);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        ArgumentOutOfRangeException.ThrowIfNegative(positionOffset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBlocks);
        if (rotaryDim < 0 || rotaryDim > headDim || rotaryDim % 2 != 0 || rotaryDim > MaxRotaryDim)
            throw new ArgumentOutOfRangeException(nameof(rotaryDim), rotaryDim, $"rotaryDim must be even and in [0, min(headDim = {headDim}, {MaxRotaryDim})]");
        if (rotaryDim > 0 && !(theta > 0 && double.IsFinite(theta)))
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "theta must be finite and > 0");
        long rows = (long)batch * time;
        long rowElements = (long)heads * headDim;
        long items = (long)heads * (headDim - rotaryDim / 2);
        if (rows > int.MaxValue || rowElements > int.MaxValue || (long)positionOffset + time > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(batch), "B * T, H * D and positionOffset + T must each fit in an int");
        BufferOverlap.RequireExactOrNone(x, y, rows * rowElements * dtype.SizeInBytes(), xName, yName);
        bool perRow = !rowOffsets.IsNull;
        if (perRow) BufferOverlap.RequireNone(rowOffsets, (long)batch * sizeof(int), y, rows * rowElements * dtype.SizeInBytes(), nameof(rowOffsets), yName);
        if (rows == 0) return;
        int rowCount = (int)rows;
        if (perRow)
        {
            nint* perRowArgs = stackalloc nint[]
            {
                (nint)(&x), (nint)(&y), (nint)(&rowOffsets), (nint)(&rowCount), (nint)(&time), (nint)(&heads), (nint)(&headDim), (nint)(&rotaryDim),
                (nint)(&theta),
            };
            device.Launch(kernel, new Dim3((uint)Math.Min(rowCount, maxBlocks)), LaunchShape.RowBlock((int)items), 0, stream, new ReadOnlySpan<nint>(perRowArgs, 9));
            return;
        }
        nint* args = stackalloc nint[]
        {
            (nint)(&x), (nint)(&y), (nint)(&rowCount), (nint)(&time), (nint)(&heads), (nint)(&headDim), (nint)(&rotaryDim), (nint)(&theta),
            (nint)(&positionOffset),
        };
        device.Launch(kernel, new Dim3((uint)Math.Min(rowCount, maxBlocks)), LaunchShape.RowBlock((int)items), 0, stream, new ReadOnlySpan<nint>(args, 9));
    }
}
