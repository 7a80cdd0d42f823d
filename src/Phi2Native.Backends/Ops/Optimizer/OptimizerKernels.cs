using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Optimizer;

/// <summary>
/// Launchers for kernels/optimizer.cu (the tables' layouts and the kernels' contracts are in its header), and
/// <see cref="GradientCheckOp"/> and <see cref="AdamWOp"/> on the CUDA backend: each builds its tables on the host,
/// uploads them in one copy, and queues its launches; nothing is read back.
/// </summary>
internal static unsafe class OptimizerKernels
{
    /// <summary>Threads per block of every kernel in optimizer.cu.</summary>
    public const uint BlockSize = 256;

    /// <summary>Elements per chunk (one block each): 64 per thread, and a tensor of Phi-2's gets thousands of blocks.</summary>
    public const int ChunkElements = 16384;

    private static readonly DType[] Measured = [DType.F32, DType.BF16, DType.F16];

    /// <summary>optimizer.cu's tensor_chunk.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TensorChunk
    {
        public long Start;
        public int Tensor;
        public int Count;
    }

    /// <summary>optimizer.cu's chunk_range.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct ChunkRange
    {
        public int First;
        public int End;
    }

    /// <summary>optimizer.cu's adamw_tensor.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct AdamWTensor
    {
        public ulong Parameter, Gradient, FirstMoment, SecondMoment;
        public float Decay, Beta1, OneMinusBeta1, Beta2, OneMinusBeta2, NegativeStepSize, Correction2Root, Epsilon;
    }

    /// <summary>
    /// One parameter's fp32 scalars, each formed in double and rounded once, as <see cref="CpuAdamW"/> forms them:
    /// decay = 1 - lr wd, 1 - beta1, 1 - beta2, -lr / (1 - beta1^step), sqrt(1 - beta2^step), eps.
    /// </summary>
    internal static AdamWTensor Scalars(in AdamWStepArguments a)
    {
        double lr = a.LearningRate;
        return new AdamWTensor
        {
            Decay = (float)(1 - lr * a.WeightDecay),
            Beta1 = (float)a.Beta1,
            OneMinusBeta1 = (float)(1 - a.Beta1),
            Beta2 = (float)a.Beta2,
            OneMinusBeta2 = (float)(1 - a.Beta2),
            NegativeStepSize = (float)(-lr / (1 - Math.Pow(a.Beta1, a.Step))),
            Correction2Root = (float)Math.Sqrt(1 - Math.Pow(a.Beta2, a.Step)),
            Epsilon = (float)a.Epsilon,
        };
    }

    /// <summary><see cref="GradientCheckOp.Measure"/> on the CUDA backend: one chunk-sum launch per dtype present, then step_status.</summary>
    public static void Measure(CudaBackend cuda, IReadOnlyList<Tensor?> tensors, IReadOnlyList<Tensor> losses, double maxNorm, StepStatus status)
    {
        int count = tensors.Count;
        var ranges = new ChunkRange[count];
        var chunks = new List<TensorChunk>();
        var groups = new List<(DType DType, int First, int End)>();
        foreach (var dtype in Measured)
        {
            int groupFirst = chunks.Count;
            for (int i = 0; i < count; i++)
                if (tensors[i] is { } tensor && tensor.DType == dtype) ranges[i] = AddChunks(chunks, i, tensor.ElementCount);
            if (chunks.Count > groupFirst) groups.Add((dtype, groupFirst, chunks.Count));
        }
        var pointers = new ulong[count];
        for (int i = 0; i < count; i++) pointers[i] = tensors[i] is { } t ? cuda.Pointer(t, $"tensors[{i}]").Address : 0;
        var lossPointers = losses.Select((loss, i) => cuda.Pointer(loss, $"losses[{i}]").Address).ToArray();

        using var table = new TableWriter();
        long pointerAt = table.Add<ulong>(pointers), lossAt = table.Add<ulong>(lossPointers);
        long rangeAt = table.Add<ChunkRange>(ranges), chunkAt = table.Add<TensorChunk>(CollectionsMarshal.AsSpan(chunks));
        using var uploaded = table.Upload(cuda);
        var at = cuda.Pointer(uploaded, "table");
        using var partial = cuda.Allocate([Math.Max(chunks.Count, 1)], DType.F32, "partial sums");
        using var tensorSums = cuda.Allocate([2 * Math.Max(count, 1)], DType.I32, "tensor sums");
        var (device, stream, pPartial) = (cuda.DeviceApi, cuda.Stream, cuda.Pointer(partial, "partial sums"));
        foreach (var (dtype, first, end) in groups)
        {
            var group = chunks.GetRange(first, end - first);
            ChunkSumOfSquares(device, dtype, at.Offset(pointerAt), at.Offset(chunkAt + first * (long)sizeof(TensorChunk)),
                pPartial.Offset(first * (long)sizeof(float)), end - first, stream,
                group.Sum(c => (long)c.Count), group.Select(c => c.Tensor).Distinct().Count());
        }
        var window = cuda.Pointer(status.Tensor, "status");
        StepStatus(device, pPartial, at.Offset(rangeAt), count, at.Offset(lossAt), lossPointers.Length, maxNorm,
            cuda.Pointer(tensorSums, "tensor sums"), status.Current > 0 ? window.Offset(status.CurrentOffset - Optimizer.StepStatus.Bytes) : DevicePtr.Null,
            window.Offset(status.CurrentOffset), stream, chunks.Count);
    }

    /// <summary><see cref="AdamWOp.Step"/> on the CUDA backend: one launch over every parameter's chunks.</summary>
    public static void AdamW(CudaBackend cuda, IReadOnlyList<AdamWTensors> tensors, StepStatus? status)
    {
        var entries = new AdamWTensor[tensors.Count];
        var chunks = new List<TensorChunk>();
        for (int i = 0; i < tensors.Count; i++)
        {
            var (parameter, gradient, first, second, arguments) = tensors[i];
            entries[i] = Scalars(arguments) with
            {
                Parameter = cuda.Pointer(parameter, "Parameter").Address,
                Gradient = cuda.Pointer(gradient, "Gradient").Address,
                FirstMoment = cuda.Pointer(first, "FirstMoment").Address,
                SecondMoment = cuda.Pointer(second, "SecondMoment").Address,
            };
            AddChunks(chunks, i, tensors[i].Parameter.ElementCount);
        }
        if (chunks.Count == 0) return;
        using var table = new TableWriter();
        long entryAt = table.Add<AdamWTensor>(entries), chunkAt = table.Add<TensorChunk>(CollectionsMarshal.AsSpan(chunks));
        using var uploaded = table.Upload(cuda);
        var at = cuda.Pointer(uploaded, "table");
        AdamWChunks(cuda.DeviceApi, at.Offset(entryAt), at.Offset(chunkAt), chunks.Count,
            status is null ? DevicePtr.Null : cuda.Pointer(status.Tensor, "status").Offset(status.CurrentOffset), cuda.Stream,
            tensors.Sum(t => t.Parameter.ElementCount), tensors.Count);
    }

    /// <summary>
    /// Launches chunk_sum_of_squares_{dtype}: grid (<paramref name="chunkCount"/>). The tables are device data, so the
    /// launcher is told what they hold for its cost: <paramref name="elements"/> over the chunks, of
    /// <paramref name="tensorCount"/> distinct tensors.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="chunkCount"/> or <paramref name="tensorCount"/> below 1, or fewer elements than chunks.</exception>
    public static void ChunkSumOfSquares(IDeviceApi device, DType dtype, DevicePtr tensorPointers, DevicePtr chunks, DevicePtr partial, int chunkCount,
        DeviceStream stream, long elements, int tensorCount)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("chunk_sum_of_squares", dtype, Measured);
        Table(tensorPointers, nameof(tensorPointers));
        Table(chunks, nameof(chunks));
        LaunchArguments.Pointer(partial, DType.F32, nameof(partial));
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(elements, chunkCount);
        ArgumentOutOfRangeException.ThrowIfLessThan(tensorCount, 1);
        nint* args = stackalloc nint[] { (nint)(&tensorPointers), (nint)(&chunks), (nint)(&partial) };
        // The chunk table, each tensor's pointer and its elements read; one fp32 sum per chunk written; 2 flops an element.
        var cost = new KernelCost(chunkCount * (long)sizeof(TensorChunk) + tensorCount * 8L + elements * dtype.SizeInBytes(),
            chunkCount * (long)sizeof(float), 0, 2 * elements);
        device.Launch(kernel, new Dim3((uint)chunkCount), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 3), cost);
    }

    /// <summary>
    /// Launches step_status: grid (1), over the <paramref name="chunkCount"/> partial sums of every group (for its cost);
    /// <paramref name="previous"/> is the block of the window's step before, or null for a window's first step.
    /// </summary>
    /// <exception cref="ArgumentException">A misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer (<paramref name="partial"/>, <paramref name="ranges"/> and <paramref name="losses"/> may be null when their counts are 0; <paramref name="previous"/> may be null).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative count, or <paramref name="maxNorm"/> negative, infinite or NaN.</exception>
    public static void StepStatus(IDeviceApi device, DevicePtr partial, DevicePtr ranges, int tensors, DevicePtr losses, int lossCount,
        double maxNorm, DevicePtr tensorSums, DevicePtr previous, DevicePtr status, DeviceStream stream, int chunkCount)
    {
        LaunchArguments.Device(device);
        ArgumentOutOfRangeException.ThrowIfNegative(tensors);
        ArgumentOutOfRangeException.ThrowIfNegative(lossCount);
        ArgumentOutOfRangeException.ThrowIfNegative(chunkCount);
        if (!NumberChecks.IsFiniteNonNegative(maxNorm)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "a finite number >= 0");
        if (tensors > 0)
        {
            LaunchArguments.Pointer(partial, DType.F32, nameof(partial));
            Table(ranges, nameof(ranges));
            Table(tensorSums, nameof(tensorSums));
        }
        if (lossCount > 0) Table(losses, nameof(losses));
        if (!previous.IsNull) Table(previous, nameof(previous));
        Table(status, nameof(status));
        nint* args = stackalloc nint[]
        {
            (nint)(&partial), (nint)(&ranges), (nint)(&tensors), (nint)(&losses), (nint)(&lossCount), (nint)(&maxNorm),
            (nint)(&tensorSums), (nint)(&previous), (nint)(&status),
        };
        // The partial sums, the ranges, the tensor sums (written, then read back), each loss's pointer and value read, the
        // previous block's verdict; the tensor sums and the status block written; an add a partial, two a tensor, one a loss.
        var cost = new KernelCost(chunkCount * (long)sizeof(float) + tensors * (long)(sizeof(ChunkRange) + 8) + lossCount * 12L + (previous.IsNull ? 0 : sizeof(int)),
            tensors * 8L + Optimizer.StepStatus.Bytes, 0, chunkCount + 2L * tensors + lossCount);
        device.Launch("step_status", new Dim3(1), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 9), cost);
    }

    /// <summary>
    /// Launches adamw_chunks_f32: grid (<paramref name="chunkCount"/>); <paramref name="status"/> may be null. For its cost
    /// the launcher is told what the tables hold: <paramref name="elements"/> over the chunks of <paramref name="parameterCount"/> parameters.
    /// </summary>
    /// <exception cref="ArgumentException">A misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null table.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="chunkCount"/> or <paramref name="parameterCount"/> below 1, or fewer elements than chunks.</exception>
    public static void AdamWChunks(IDeviceApi device, DevicePtr tensors, DevicePtr chunks, int chunkCount, DevicePtr status, DeviceStream stream,
        long elements, int parameterCount)
    {
        LaunchArguments.Device(device);
        Table(tensors, nameof(tensors));
        Table(chunks, nameof(chunks));
        if (!status.IsNull) Table(status, nameof(status));
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(elements, chunkCount);
        ArgumentOutOfRangeException.ThrowIfLessThan(parameterCount, 1);
        nint* args = stackalloc nint[] { (nint)(&tensors), (nint)(&chunks), (nint)(&status) };
        // The status's skip flag and clip scale, the tables, and p, g, m, v read; p, m, v written; 14 flops an element
        // (optimizer.cu's arithmetic; 15 when the gradient is clipped). A step the status skips moves none of it: an upper bound.
        var cost = new KernelCost((status.IsNull ? 0 : 12) + chunkCount * (long)sizeof(TensorChunk) + parameterCount * (long)sizeof(AdamWTensor) + 16 * elements,
            12 * elements, 0, 14 * elements);
        device.Launch("adamw_chunks_f32", new Dim3((uint)chunkCount), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 3), cost);
    }

    private static ChunkRange AddChunks(List<TensorChunk> chunks, int tensor, long elements)
    {
        int first = chunks.Count;
        for (long start = 0; start < elements; start += ChunkElements)
            chunks.Add(new TensorChunk { Start = start, Tensor = tensor, Count = (int)Math.Min(ChunkElements, elements - start) });
        return new ChunkRange { First = first, End = chunks.Count };
    }

    // The tables hold 8-byte fields (pointers, long long, double).
    private static void Table(DevicePtr pointer, string argument)
    {
        if (pointer.IsNull) throw new ArgumentNullException(argument, $"{argument} is a null device pointer");
        if (pointer.Address % 8 != 0) throw new ArgumentException($"{argument} {pointer} is not 8-byte aligned", argument);
    }

    /// <summary>Packs tables one after another (each at an 8-byte offset) for one upload.</summary>
    private sealed class TableWriter : IDisposable
    {
        private readonly MemoryStream _bytes = new();

        public long Add<T>(ReadOnlySpan<T> values) where T : unmanaged
        {
            long at = _bytes.Length;
            _bytes.Write(MemoryMarshal.AsBytes(values));
            while (_bytes.Length % 8 != 0) _bytes.WriteByte(0);
            return at;
        }

        /// <summary>The tables in a device buffer (an I32 tensor of their bytes), queued on the backend's stream.</summary>
        public Tensor Upload(CudaBackend cuda)
        {
            long length = Math.Max(_bytes.Length, 8);
            var tensor = cuda.Allocate([checked((int)(length / sizeof(int)))], DType.I32, "optimizer tables");
            if (_bytes.Length > 0) cuda.DeviceApi.CopyToDevice(cuda.Pointer(tensor, "optimizer tables"), _bytes.GetBuffer().AsSpan(0, (int)_bytes.Length), cuda.Stream);
            return tensor;
        }

        public void Dispose() => _bytes.Dispose();
    }
}
