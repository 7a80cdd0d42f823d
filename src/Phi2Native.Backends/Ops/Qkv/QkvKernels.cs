using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Qkv;

// QkvProjectionOp on the CUDA backend: one cuBLASLt GEMM (BIAS epilogue) gives qkv [N, 3C], then kernels/qkv.cu's
// qkv_split_rotary gives q, k, v (or writes k, v into the cache). Backward: qkv_split_rotary_backward gives dqkv [N, 3C],
// then one dX GEMM over all three blocks, and one dW GEMM and one dBias GEMM per run of adjacent trained blocks.
// Row-major against column-major as in CudaLinear: with W [3C, C] and dqkv [N, 3C] (leading dimension 3C),
//   dx      dx^T [C, N] += W^T [C, 3C] dqkv^T [3C, N]                                   m = C, n = N, k = 3C; beta 1
//   dW_j    dW_j^T [C, cC] += x^T [C, N] dqkv_j [N, cC]  (dqkv_j: columns [jC, jC + cC))  m = C, n = cC, k = N; beta 1
//   dB_j    dB_j [cC] += dqkv_j^T [cC, N] ones [N]                                       m = cC, n = 1, k = N; beta 1
// where a run is c consecutive projections whose gradient tensors follow one another in one block of memory (the
// gradients the tape makes for them are views of one buffer: BackwardContext.AccumulatorsFor). Projections whose
// weights are not one [3C, C] block (never the model's; possible for a caller's own tensors) take one GEMM each,
// into their column block of qkv (ldd 3C) and, for dx, accumulating.
// With LoRA modules: forward GEMM, LoraQkvOp's lora_qkv_down and lora_qkv_up (qkv + the branches, a new [N, 3C]; u saved),
// then the split: 4 launches; backward the split's backward, LoraQkvOp's 4 (dB, du, dA, dx += before the base's dX
// GEMM adds its product with beta 1), then the GEMMs above from the same dqkv.
internal static unsafe class QkvKernels
{
    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary><see cref="QkvProjectionOp"/>'s forward on the CUDA backend, the contract checked: q, and k and v unless they went into the caches.</summary>
    internal static (Tensor Q, Tensor? K, Tensor? V) Forward(CudaBackend cuda, Tensor x, QkvParameters p, QkvShape shape, Tensor? positions, Tensor? keys, Tensor? values,
        out Tensor? u)
    {
        u = null;
        int batch = x.Size(0), time = x.Size(1), rows = batch * time, c = x.Size(2);
        var dtype = x.DType;
        int[] headShape = [batch, time, shape.Heads, shape.HeadDim];
        var q = cuda.Allocate(headShape, dtype, nameof(x));
        Tensor? k = null, v = null;
        try
        {
            if (keys is null)
            {
                k = cuda.Allocate(headShape, dtype, nameof(x));
                v = cuda.Allocate(headShape, dtype, nameof(x));
            }
            if (rows == 0) return (q, k, v);
            using var qkv = cuda.Allocate([batch, time, 3 * c], dtype, "qkv");
            Project(cuda, x, p, qkv, rows, c);
            using var adapted = p.Adapted ? LoraQkvOp.Forward(x, qkv, p.Adapters!, out u) : null;
            SplitRotary(cuda.DeviceApi, dtype, cuda.Pointer(adapted ?? qkv, "qkv"), cuda.Pointer(q, "q"), cuda.Pointer(k ?? keys!, "keys"), cuda.Pointer(v ?? values!, "values"),
                cuda.OptionalPointer(positions, nameof(positions)), batch, time, shape.Heads, shape.HeadDim, shape.RotaryDim, shape.Theta,
                keys?.Size(1) ?? 0, cuda.Stream);
            return (q, k, v);
        }
        catch
        {
            q.Dispose();
            k?.Dispose();
            v?.Dispose();
            u?.Dispose();
            u = null;
            throw;
        }
    }

    // qkv [N, 3C] = x W^T + b: one GEMM over the fused weight, else one per projection into its column block.
    private static void Project(CudaBackend cuda, Tensor x, QkvParameters p, Tensor qkv, int rows, int c)
    {
        var dtype = x.DType;
        var (px, py) = (cuda.Pointer(x, nameof(x)), cuda.Pointer(qkv, "qkv"));
        if (p.WeightsFused && p.BiasesFused)
        {
            cuda.DeviceApi.Blas.LtMatmul(CudaLinear.Projection(px, cuda.Pointer(p.Weights[0], "q weight"), py, dtype, rows, c, 3 * c) with
            {
                Epilogue = LtEpilogue.Bias, Bias = cuda.Pointer(p.Biases[0], "q bias"), BiasType = dtype,
            }, cuda.Stream);
            return;
        }
        // Not the model's layout (see the class): three GEMMs into the column blocks.
        for (int j = 0; j < 3; j++)
            cuda.DeviceApi.Blas.LtMatmul(CudaLinear.Projection(px, cuda.Pointer(p.Weights[j], QkvParameters.Names[j] + " weight"), py.Offset((long)j * c * dtype.SizeInBytes()), dtype, rows, c, c) with
            {
                Ldd = 3 * c, Epilogue = LtEpilogue.Bias, Bias = cuda.Pointer(p.Biases[j], QkvParameters.Names[j] + " bias"), BiasType = dtype,
            }, cuda.Stream);
    }

    /// <summary>
    /// <see cref="QkvProjectionOp"/>'s backward on the CUDA backend, the contract checked: dx (+=) if asked; each non-null
    /// weight and bias gradient (+=), one GEMM per run of adjacent ones (see the class).
    /// </summary>
    internal static void Backward(CudaBackend cuda, Tensor? dq, Tensor? dk, Tensor? dv, Tensor x, QkvParameters p, QkvShape shape, Tensor? positions,
        Tensor? dx, Tensor?[] weightGradients, Tensor?[] biasGradients, QkvAdapterGradients? adapters = null)
    {
        int batch = x.Size(0), time = x.Size(1), rows = batch * time, c = x.Size(2);
        if (rows == 0) return;
        var dtype = x.DType;
        int size = dtype.SizeInBytes();
        var blas = cuda.DeviceApi.Blas;
        var stream = cuda.Stream;
        using var dqkv = cuda.Allocate([batch, time, 3 * c], dtype, "dqkv");
        var pd = cuda.Pointer(dqkv, "dqkv");
        SplitRotaryBackward(cuda.DeviceApi, dtype, cuda.OptionalPointer(dq, nameof(dq)), cuda.OptionalPointer(dk, nameof(dk)), cuda.OptionalPointer(dv, nameof(dv)), pd,
            cuda.OptionalPointer(positions, nameof(positions)), batch, time, shape.Heads, shape.HeadDim, shape.RotaryDim, shape.Theta, stream);
        adapters?.Apply(dqkv, x, dx);
        if (dx is not null)
        {
            var pdx = cuda.Pointer(dx, nameof(dx));
            if (p.WeightsFused)
                blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, c, rows, 3 * c,
                    1f, cuda.Pointer(p.Weights[0], "q weight"), dtype, c, pd, dtype, 3 * c, 1f, pdx, dtype, c, stream);
            else
                for (int j = 0; j < 3; j++)
                    blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, c, rows, c,
                        1f, cuda.Pointer(p.Weights[j], QkvParameters.Names[j] + " weight"), dtype, c, pd.Offset((long)j * c * size), dtype, 3 * c,
                        1f, pdx, dtype, c, stream);
        }
        var px = cuda.Pointer(x, nameof(x));
        foreach (var (start, count) in Runs(weightGradients))
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.Transpose, c, count * c, rows,
                1f, px, dtype, c, pd.Offset((long)start * c * size), dtype, 3 * c,
                1f, cuda.Pointer(weightGradients[start]!, QkvParameters.Names[start] + " weight gradient"), weightGradients[start]!.DType, c, stream);
        foreach (var (start, count) in Runs(biasGradients))
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, count * c, 1, rows,
                1f, pd.Offset((long)start * c * size), dtype, 3 * c, cuda.Ones(dtype, rows), dtype, rows,
                1f, cuda.Pointer(biasGradients[start]!, QkvParameters.Names[start] + " bias gradient"), biasGradients[start]!.DType, count * c, stream);
    }

    /// <summary>Runs (first block, block count) of consecutive non-null gradients each of which starts where the one before ends.</summary>
    internal static List<(int Start, int Count)> Runs(Tensor?[] gradients)
    {
        var runs = new List<(int, int)>();
        for (int j = 0; j < gradients.Length; j++)
        {
            if (gradients[j] is null) continue;
            int start = j;
            while (j + 1 < gradients.Length && gradients[j + 1] is { } next && gradients[j]!.Precedes(next)) j++;
            runs.Add((start, j - start + 1));
        }
        return runs;
    }

    /// <summary>
    /// Launches qkv.cu's qkv_split_rotary_{dtype} (contract in its header): <paramref name="capacity"/> 0 writes k and v
    /// [B, T, H, D], &gt; 0 writes them into caches [B, capacity, H, D] (then <paramref name="rowOffsets"/> is required);
    /// at most <paramref name="maxBlocks"/> blocks (checks pass a small value so each block walks several rows).
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, an output overlapping an input, or a cache without row offsets.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than rowOffsets.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim or theta is out of range, or T &gt; capacity.</exception>
    public static void SplitRotary(IDeviceApi device, DType dtype, DevicePtr qkv, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr rowOffsets,
        int batch, int time, int heads, int headDim, int rotaryDim, double theta, int capacity, DeviceStream stream = default, int maxBlocks = int.MaxValue)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("qkv_split_rotary", dtype, Supported);
        LaunchArguments.Pointer(qkv, dtype, nameof(qkv));
        LaunchArguments.Pointer(q, dtype, nameof(q));
        LaunchArguments.Pointer(k, dtype, nameof(k));
        LaunchArguments.Pointer(v, dtype, nameof(v));
        LaunchArguments.OptionalPointer(rowOffsets, DType.I32, nameof(rowOffsets));
        var (rows, c, items) = CheckShape(batch, time, heads, headDim, rotaryDim, theta, maxBlocks);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        if (capacity > 0 && time > capacity)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"capacity (Tmax) must be >= time ({time})");
        if (capacity > 0 && rowOffsets.IsNull)
            throw new ArgumentException("writing into caches (capacity > 0) needs each batch row's position: rowOffsets is null", nameof(rowOffsets));
        int size = dtype.SizeInBytes();
        long headsBytes = rows * c * size, kvBytes = capacity > 0 ? (long)batch * capacity * c * size : headsBytes;
        BufferOverlap.RequireNone(qkv, 3 * headsBytes, q, headsBytes, nameof(qkv), nameof(q));
        BufferOverlap.RequireNone(qkv, 3 * headsBytes, k, kvBytes, nameof(qkv), nameof(k));
        BufferOverlap.RequireNone(qkv, 3 * headsBytes, v, kvBytes, nameof(qkv), nameof(v));
        BufferOverlap.RequireNone(q, headsBytes, k, kvBytes, nameof(q), nameof(k));
        BufferOverlap.RequireNone(q, headsBytes, v, kvBytes, nameof(q), nameof(v));
        BufferOverlap.RequireNone(k, kvBytes, v, kvBytes, nameof(k), nameof(v));
        if (!rowOffsets.IsNull)
            foreach (var (output, bytes, name) in new[] { (q, headsBytes, nameof(q)), (k, kvBytes, nameof(k)), (v, kvBytes, nameof(v)) })
                BufferOverlap.RequireNone(rowOffsets, (long)batch * sizeof(int), output, bytes, nameof(rowOffsets), name);
        if (rows == 0) return;
        int rowCount = (int)rows;
        nint* args = stackalloc nint[]
        {
            (nint)(&qkv), (nint)(&q), (nint)(&k), (nint)(&v), (nint)(&rowOffsets), (nint)(&rowCount), (nint)(&time), (nint)(&heads), (nint)(&headDim),
            (nint)(&rotaryDim), (nint)(&theta), (nint)(&capacity),
        };
        // qkv read once, q, k, v written once (k and v into the cache's rows), the row offsets; 3 flops per rotated element of q and k.
        device.Launch(kernel, new Dim3((uint)Math.Min(rowCount, maxBlocks)), LaunchShape.RowBlock(items), 0, stream, new ReadOnlySpan<nint>(args, 12),
            new KernelCost(3 * headsBytes + (rowOffsets.IsNull ? 0 : (long)batch * sizeof(int)), 3 * headsBytes, 0, 2 * 3 * rows * heads * rotaryDim));
    }

    /// <summary>Launches qkv.cu's qkv_split_rotary_backward_{dtype} (contract in its header); a null dq, dk or dv gives zeros in its block of dqkv.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or dqkv overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null dqkv.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, rotaryDim or theta is out of range.</exception>
    public static void SplitRotaryBackward(IDeviceApi device, DType dtype, DevicePtr dq, DevicePtr dk, DevicePtr dv, DevicePtr dqkv, DevicePtr rowOffsets,
        int batch, int time, int heads, int headDim, int rotaryDim, double theta, DeviceStream stream = default, int maxBlocks = int.MaxValue)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("qkv_split_rotary_backward", dtype, Supported);
        LaunchArguments.Pointer(dqkv, dtype, nameof(dqkv));
        int present = 0;
        foreach (var (pointer, name) in new[] { (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)) })
            if (LaunchArguments.OptionalPointer(pointer, dtype, name)) present++;
        LaunchArguments.OptionalPointer(rowOffsets, DType.I32, nameof(rowOffsets));
        var (rows, c, items) = CheckShape(batch, time, heads, headDim, rotaryDim, theta, maxBlocks);
        int size = dtype.SizeInBytes();
        long headsBytes = rows * c * size;
        foreach (var (pointer, name) in new[] { (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)), (rowOffsets, nameof(rowOffsets)) })
            if (!pointer.IsNull)
                BufferOverlap.RequireNone(pointer, name == nameof(rowOffsets) ? (long)batch * sizeof(int) : headsBytes, dqkv, 3 * headsBytes, name, nameof(dqkv));
        if (rows == 0) return;
        int rowCount = (int)rows;
        nint* args = stackalloc nint[]
        {
            (nint)(&dq), (nint)(&dk), (nint)(&dv), (nint)(&dqkv), (nint)(&rowOffsets), (nint)(&rowCount), (nint)(&time), (nint)(&heads), (nint)(&headDim),
            (nint)(&rotaryDim), (nint)(&theta),
        };
        // The present gradients read once, dqkv written once, the row offsets; 3 flops per rotated element of dq and dk.
        device.Launch(kernel, new Dim3((uint)Math.Min(rowCount, maxBlocks)), LaunchShape.RowBlock(items), 0, stream, new ReadOnlySpan<nint>(args, 11),
            new KernelCost(present * headsBytes + (rowOffsets.IsNull ? 0 : (long)batch * sizeof(int)), 3 * headsBytes, 0, 2 * 3 * rows * heads * rotaryDim));
    }

    private static (long Rows, long C, int Items) CheckShape(int batch, int time, int heads, int headDim, int rotaryDim, double theta, int maxBlocks)
    {
        RotaryKernels.CheckRotaryShape(batch, time, heads, headDim, rotaryDim, theta, maxBlocks);
        long rows = (long)batch * time, c = (long)heads * headDim;
        long items = 2L * heads * (headDim - rotaryDim / 2) + c;
        if (rows > int.MaxValue || 3 * c > int.MaxValue || items > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(batch), "B * T and 3 H D must each fit in an int");
        return (rows, c, (int)items);
    }
}
