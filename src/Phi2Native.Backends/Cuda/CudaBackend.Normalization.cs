using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// Embedding, forward and backward (kernels/embedding.cu), and the fp32 accumulation of parameter gradients. Kernels take F32
// or BF16 activations and accumulate parameter gradients in fp32 buffers; a BF16 parameter gradient is widened into
// an fp32 scratch copy, accumulated there and rounded back once (AccumulateInSingle).
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    /// <remarks>
    /// The ids are read back and checked on the host first (one small synchronizing copy), so an id outside [0, V)
    /// throws the CPU backend's exception before anything is written, instead of leaving a NaN row.
    /// </remarks>
    public Tensor Embedding(Tensor weight, Tensor ids)
    {
        var pw = Pointer(weight, nameof(weight));
        var pi = Pointer(ids, nameof(ids));
        RequireRank(weight, 2, "Embedding weight [V, C]");
        RequireIds(ids, "Embedding ids");
        RequireDType(weight, nameof(Embedding), nameof(weight), DType.F32, DType.BF16);
        int vocab = weight.Size(0), channels = weight.Size(1);
        int count = Int(ids.ElementCount, "Embedding ids");
        EmbeddingKernels.CheckIds(ReadInt32(ids, nameof(ids)), vocab);
        var output = Allocate([.. ids.Shape, channels], weight.DType, nameof(weight));
        if (count > 0 && channels > 0)
            EmbeddingKernels.Embedding(_device, weight.DType, weight.DType, pw, pi, Pointer(output, "output"), count, vocab, channels, stream: _stream);
        return output;
    }

    /// <inheritdoc/>
    /// <remarks>dOutput is F32 or BF16; dWeight is F32 (accumulated in place) or BF16 (through an fp32 copy). Ids are checked on the host first.</remarks>
    public void EmbeddingBackward(Tensor dOutput, Tensor ids, Tensor dWeight)
    {
        var pdy = Pointer(dOutput, nameof(dOutput));
        var pi = Pointer(ids, nameof(ids));
        Pointer(dWeight, nameof(dWeight));
        RequireRank(dWeight, 2, "EmbeddingBackward dWeight [V, C]");
        RequireIds(ids, "EmbeddingBackward ids");
        RequireDType(dOutput, nameof(EmbeddingBackward), nameof(dOutput), DType.F32, DType.BF16);
        RequireDType(dWeight, nameof(EmbeddingBackward), nameof(dWeight), DType.F32, DType.BF16);
        int vocab = dWeight.Size(0), channels = dWeight.Size(1);
        int count = Int(ids.ElementCount, "EmbeddingBackward ids");
        RequireCount(dOutput, (long)count * channels, $"EmbeddingBackward dOutput [{count}, {channels}]");
        EmbeddingKernels.CheckIds(ReadInt32(ids, nameof(ids)), vocab);
        if (count == 0 || channels == 0) return;
        AccumulateInSingle(dWeight, nameof(dWeight), pdw =>
            EmbeddingKernels.EmbeddingBackward(_device, dOutput.DType, pdy, pi, pdw, count, vocab, channels, stream: _stream));
    }

    /// <summary>
    /// Runs <paramref name="accumulate"/> on an fp32 view of the parameter gradient <paramref name="gradient"/>: its own
    /// memory when it is F32; otherwise an fp32 scratch copy (widened exactly), rounded back once afterwards. A null
    /// gradient passes the null pointer (not wanted).
    /// </summary>
    internal void AccumulateInSingle(Tensor? gradient, string argument, Action<DevicePtr> accumulate)
    {
        if (gradient is null) { accumulate(DevicePtr.Null); return; }
        var pointer = Pointer(gradient, argument);
        if (gradient.DType == DType.F32) { accumulate(pointer); return; }
        using var wide = Scratch(gradient.ElementCount * sizeof(float));
        CastKernels.Cast(_device, gradient.DType, DType.F32, pointer, wide.Pointer, gradient.ElementCount, _stream);
        accumulate(wide.Pointer);
        CastKernels.Cast(_device, DType.F32, gradient.DType, wide.Pointer, pointer, gradient.ElementCount, _stream);
    }
}
