using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Embeddings;

/// <summary>Launchers for kernels/embedding.cu (each kernel's contract is in its header), and <see cref="EmbeddingOp"/> on the CUDA backend.</summary>
/// <remarks>
/// Ids outside [0, V), which the CPU backend refuses: ids that live on the host are checked there by <see cref="CheckIds"/>
/// (the CPU backend's exception) before they are uploaded; for ids made on the device, the kernels' optional <c>badPosition</c>
/// flag (an int, 4-byte aligned) is prepared by <see cref="ResetBadPosition"/> and read back by <see cref="ReadBadPosition"/>.
/// </remarks>
internal static unsafe class EmbeddingKernels
{
    /// <summary><see cref="EmbeddingOp.Forward"/> on the CUDA backend, the contract checked; the ids stay on the device (no read-back).</summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor weight, Tensor ids, int count)
    {
        int vocab = weight.Size(0), channels = weight.Size(1);
        var output = cuda.Allocate([.. ids.Shape, channels], weight.DType, nameof(weight));
        if (count > 0 && channels > 0)
            Embedding(cuda.DeviceApi, weight.DType, weight.DType, cuda.Pointer(weight, nameof(weight)), cuda.Pointer(ids, nameof(ids)),
                cuda.Pointer(output, "output"), count, vocab, channels, stream: cuda.Stream);
        return output;
    }

    /// <summary><see cref="EmbeddingOp"/>'s backward on the CUDA backend, the contract checked: fp32 accumulation, a BF16 dWeight through an fp32 copy.</summary>
    internal static void Backward(CudaBackend cuda, Tensor dOutput, Tensor ids, Tensor dWeight, int count)
    {
        int vocab = dWeight.Size(0), channels = dWeight.Size(1);
        if (count == 0 || channels == 0) return;
        var (pdy, pi) = (cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(ids, nameof(ids)));
        cuda.AccumulateInSingle(dWeight, nameof(dWeight), pdw =>
            EmbeddingBackward(cuda.DeviceApi, dOutput.DType, pdy, pi, pdw, count, vocab, channels, stream: cuda.Stream));
    }

    /// <summary>What <see cref="ResetBadPosition"/> leaves in the flag: 0x7F7F7F7F, larger than any row count in use.</summary>
    public const int NoBadPosition = 0x7F7F7F7F;

    /// <summary>Threads per block of backward at most: its id tile (PHI2_EMBEDDING_ID_TILE in embedding.cu).</summary>
    public const uint MaxBackwardBlock = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>The forward kernel for a table of <paramref name="tableDtype"/> and an output of <paramref name="outputDtype"/>:
    /// <c>embedding_{dtype}</c> when they agree, else <c>embedding_{table}_{output}</c>.</summary>
    /// <exception cref="ArgumentException">A dtype other than F32 or BF16.</exception>
    public static string ForwardName(DType tableDtype, DType outputDtype)
    {
        if (!Supported.Contains(tableDtype)) throw new ArgumentException($"embedding has no {tableDtype} table kernel (F32, BF16)", nameof(tableDtype));
        if (!Supported.Contains(outputDtype)) throw new ArgumentException($"embedding has no {outputDtype} output kernel (F32, BF16)", nameof(outputDtype));
        return tableDtype == outputDtype
            ? "embedding_" + KernelName.Suffix(tableDtype)
            : "embedding_" + KernelName.Suffix(tableDtype) + "_" + KernelName.Suffix(outputDtype);
    }

    /// <summary>
    /// Throws the CPU backend's exception when an id is outside [0, <paramref name="vocabSize"/>): the host-side check
    /// of ids before they are uploaded (O(N), no device work).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is out of range; the message names its position.</exception>
    public static void CheckIds(ReadOnlySpan<int> ids, int vocabSize)
    {
        for (int n = 0; n < ids.Length; n++)
            if ((uint)ids[n] >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[n], $"ids[{n}] = {ids[n]} is outside the vocabulary [0, {vocabSize}).");
    }

    /// <summary>Fills the int flag at <paramref name="badPosition"/> with <see cref="NoBadPosition"/> (one 4-byte memset).</summary>
    public static void ResetBadPosition(IDeviceApi device, DevicePtr badPosition, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        LaunchArguments.Pointer(badPosition, DType.I32, nameof(badPosition));
        device.Fill(badPosition, 0x7F, sizeof(int), stream);
    }

    /// <summary>The first position whose id was out of range, or null when there was none (reads the flag back: synchronizes).</summary>
    public static int? ReadBadPosition(IDeviceApi device, DevicePtr badPosition, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        LaunchArguments.Pointer(badPosition, DType.I32, nameof(badPosition));
        int value = 0;
        device.CopyToHost(new Span<byte>(&value, sizeof(int)), badPosition, stream);
        return value == NoBadPosition ? null : value;
    }

    /// <summary>Launches embedding.cu's embedding_{dtype} or embedding_{table}_{out} (contract in its header) with at most <paramref name="maxBlocks"/> blocks: checks pass a small value so each block walks several rows.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null weight, ids or output.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative count, or no vocabulary or channels.</exception>
    public static void Embedding(IDeviceApi device, DType tableDtype, DType outputDtype, DevicePtr weight, DevicePtr ids, DevicePtr output,
        int count, int vocabSize, int channels, DevicePtr badPosition = default, DeviceStream stream = default,
        int maxBlocks = int.MaxValue)
    {
        LaunchArguments.Device(device);
        string kernel = ForwardName(tableDtype, outputDtype);
        LaunchArguments.Pointer(weight, tableDtype, nameof(weight));
        LaunchArguments.Pointer(ids, DType.I32, nameof(ids));
        LaunchArguments.Pointer(output, outputDtype, nameof(output));
        LaunchArguments.OptionalPointer(badPosition, DType.I32, nameof(badPosition));
        if (!CheckSizes(count, vocabSize, channels, maxBlocks)) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&weight), (nint)(&ids), (nint)(&output), (nint)(&badPosition), (nint)(&count), (nint)(&vocabSize), (nint)(&channels),
        };
        // One table row per id (an upper bound: a repeated id's row is read once), the ids; the output rows.
        device.Launch(kernel, new Dim3((uint)Math.Min(count, maxBlocks)), LaunchShape.RowBlock(channels), 0, stream, new ReadOnlySpan<nint>(args, 7),
            new KernelCost((long)count * (channels * tableDtype.SizeInBytes() + sizeof(int)), (long)count * channels * outputDtype.SizeInBytes(), 0, 0));
    }

    /// <summary>Launches embedding.cu's embedding_backward_{dtype} (contract in its header) with at most <paramref name="maxBlocks"/> blocks, as <see cref="Embedding"/>.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null dOutput, ids or dWeight.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative count, or no vocabulary or channels.</exception>
    public static void EmbeddingBackward(IDeviceApi device, DType dtype, DevicePtr dOutput, DevicePtr ids, DevicePtr dWeight,
        int count, int vocabSize, int channels, DevicePtr badPosition = default, DeviceStream stream = default,
        int maxBlocks = int.MaxValue)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("embedding_backward", dtype, Supported);
        LaunchArguments.Pointer(dOutput, dtype, nameof(dOutput));
        LaunchArguments.Pointer(ids, DType.I32, nameof(ids));
        LaunchArguments.Pointer(dWeight, DType.F32, nameof(dWeight));
        LaunchArguments.OptionalPointer(badPosition, DType.I32, nameof(badPosition));
        if (!CheckSizes(count, vocabSize, channels, maxBlocks)) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&dOutput), (nint)(&ids), (nint)(&dWeight), (nint)(&badPosition), (nint)(&count), (nint)(&vocabSize), (nint)(&channels),
        };
        uint block = Math.Min(MaxBackwardBlock, LaunchShape.RowBlock(channels));
        // dOutput and the ids read; one fp32 dWeight row read and written per id (+=; an upper bound: a repeated id's row once).
        long rowsBytes = (long)count * channels;
        device.Launch(kernel, new Dim3((uint)Math.Min(count, maxBlocks)), block, 0, stream, new ReadOnlySpan<nint>(args, 7),
            new KernelCost(rowsBytes * (dtype.SizeInBytes() + sizeof(float)) + (long)count * sizeof(int), rowsBytes * sizeof(float), 0, rowsBytes));
    }

    // The sizes both launchers take; false when there is nothing to launch (no ids).
    private static bool CheckSizes(int count, int vocabSize, int channels, int maxBlocks)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBlocks);
        return count > 0;
    }
}
