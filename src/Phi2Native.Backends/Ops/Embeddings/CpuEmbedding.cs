// Token embedding lookup (model.embed_tokens), forward and backward.
//
//   Forward(weight [V,C], ids [N], output [N,C])       output[n] = weight[ids[n]]
//   Backward(dOutput [N,C], ids [N], dWeight [V,C] +=)  dWeight[ids[n]] += dOutput[n]
//
// Backward needs only the ids saved (the lookup is linear in weight). Repeated ids accumulate; each
// dWeight element sums its rows in increasing n, whatever the threading, so the result is
// deterministic. Ids are checked before anything is written.
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Embeddings;

internal static class CpuEmbedding
{
    /// <summary><see cref="EmbeddingOp.Forward"/> on the CPU backend, the contract checked (ids are checked here too: host memory).</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor weight, Tensor ids)
    {
        int vocab = weight.Size(0), channels = weight.Size(1);
        var output = cpu.Allocate([.. ids.Shape, channels], weight.DType);
        if (weight.DType == DType.F64) Forward(CpuBackend.Span<double>(weight), CpuBackend.Span<int>(ids), CpuBackend.Span<double>(output), vocab, channels);
        else Forward(CpuBackend.Span<float>(weight), CpuBackend.Span<int>(ids), CpuBackend.Span<float>(output), vocab, channels);
        return output;
    }

    /// <summary><see cref="EmbeddingOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor dOutput, Tensor ids, Tensor dWeight)
    {
        int vocab = dWeight.Size(0), channels = dWeight.Size(1);
        if (dWeight.DType == DType.F64) Backward(CpuBackend.Span<double>(dOutput), CpuBackend.Span<int>(ids), CpuBackend.Span<double>(dWeight), vocab, channels);
        else Backward(CpuBackend.Span<float>(dOutput), CpuBackend.Span<int>(ids), CpuBackend.Span<float>(dWeight), vocab, channels);
    }

    /// <summary>Gathers rows: <c>output[n, :] = weight[ids[n], :]</c>.</summary>
    /// <param name="weight">[V, C] embedding table.</param>
    /// <param name="ids">[N] token ids, each in [0, V).</param>
    /// <param name="output">[N, C] gathered rows (overwritten).</param>
    /// <param name="vocabSize">V.</param>
    /// <param name="channels">C.</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is negative, or an id is outside [0, V)
    /// (the message names its position).</exception>
    public static void Forward<TFloat>(ReadOnlySpan<TFloat> weight, ReadOnlySpan<int> ids, Span<TFloat> output,
        int vocabSize, int channels)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        int rows = ids.Length;
        CheckShapes(weight.Length, rows, output.Length, vocabSize, channels, nameof(weight), nameof(output));
        CheckIds(ids, vocabSize);
        // A pure copy is memory-bound: one thread already saturates what the row gather can use.
        for (int n = 0; n < rows; n++)
            weight.Slice(ids[n] * channels, channels).CopyTo(output.Slice(n * channels, channels));
    }

    /// <summary>Scatter-adds the output gradient: <c>dWeight[ids[n], :] += dOutput[n, :]</c>.</summary>
    /// <param name="dOutput">[N, C] gradient of the gathered rows.</param>
    /// <param name="ids">[N] the ids the forward pass used.</param>
    /// <param name="dWeight">[V, C] parameter gradient, accumulated (+=).</param>
    /// <param name="vocabSize">V.</param>
    /// <param name="channels">C.</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is negative, or an id is outside [0, V).</exception>
    public static unsafe void Backward<TFloat>(ReadOnlySpan<TFloat> dOutput, ReadOnlySpan<int> ids, Span<TFloat> dWeight,
        int vocabSize, int channels)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        int rows = ids.Length;
        CheckShapes(dWeight.Length, rows, dOutput.Length, vocabSize, channels, nameof(dWeight), nameof(dOutput));
        CheckIds(ids, vocabSize);
        if (rows == 0 || channels == 0) return;

        // Threads split the channels, never the rows: two threads never add into the same element,
        // and every element still sums its rows in order n = 0..N-1 (deterministic).
        const int blockChannels = 256;
        int blocks = (channels + blockChannels - 1) / blockChannels;
        bool parallel = CpuKernelSupport.ShouldParallelize(blocks, (long)rows * channels);
        fixed (TFloat* pdOut = dOutput, pdW = dWeight)
        fixed (int* pIds = ids)
        {
            TFloat* dOut = pdOut, dW = pdW;
            int* idp = pIds;
            CpuKernelSupport.For(blocks, parallel, block =>
            {
                int c0 = block * blockChannels, width = Math.Min(blockChannels, channels - c0);
                for (int n = 0; n < rows; n++)
                {
                    var dst = new Span<TFloat>(dW + (long)idp[n] * channels + c0, width);
                    TensorPrimitives.Add(dst, new ReadOnlySpan<TFloat>(dOut + (long)n * channels + c0, width), dst);
                }
            });
        }
    }

    private static void CheckShapes(int tableLength, int rows, int rowsLength, int vocabSize, int channels,
        string tableName, string rowsName)
    {
        CpuKernelSupport.NonNegative(vocabSize, nameof(vocabSize));
        CpuKernelSupport.NonNegative(channels, nameof(channels));
        CpuKernelSupport.Length(tableLength, (long)vocabSize * channels, tableName, "[V, C]");
        CpuKernelSupport.Length(rowsLength, (long)rows * channels, rowsName, "[N, C] with N = ids.Length");
    }

    private static void CheckIds(ReadOnlySpan<int> ids, int vocabSize)
    {
        for (int n = 0; n < ids.Length; n++)
            if ((uint)ids[n] >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[n],
                    $"ids[{n}] = {ids[n]} is outside the vocabulary [0, {vocabSize}).");
    }
}
