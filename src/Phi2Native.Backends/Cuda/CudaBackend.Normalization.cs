using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// Embedding and LayerNorm, forward and backward (kernels/embedding.cu, kernels/layernorm.cu). Their kernels take F32
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

    /// <inheritdoc/>
    /// <remarks>x, weight and bias share a dtype (F32 or BF16); y has it; mean and rstd are F32 [rows] whatever it is.</remarks>
    public Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps, out Tensor mean, out Tensor rstd)
    {
        var px = Pointer(x, nameof(x));
        var pw = Pointer(weight, nameof(weight));
        var pb = Pointer(bias, nameof(bias));
        if (x.Rank == 0) throw new ArgumentException("LayerNorm: x must have a channel dimension, got a scalar", nameof(x));
        int channels = x.Size(-1), rows = Int(x.ElementCount / Math.Max(channels, 1), "LayerNorm rows");
        RequireVector(weight, channels, "LayerNorm weight");
        RequireVector(bias, channels, "LayerNorm bias");
        RequireDType(x, nameof(LayerNorm), nameof(x), DType.F32, DType.BF16);
        RequireSameDType(weight, x.DType, nameof(LayerNorm), nameof(weight));
        RequireSameDType(bias, x.DType, nameof(LayerNorm), nameof(bias));
        if (!(eps >= 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be >= 0.");
        var y = Allocate(x.Shape, x.DType, nameof(x));
        mean = Allocate([rows], DType.F32, nameof(mean));
        rstd = Allocate([rows], DType.F32, nameof(rstd));
        if (rows > 0 && channels > 0)
            LayerNormKernels.LayerNorm(_device, x.DType, px, pw, pb, (float)eps, Pointer(y, "y"), Pointer(mean, nameof(mean)), Pointer(rstd, nameof(rstd)),
                rows, channels, _stream);
        return y;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// dOutput, x, weight and dx share a dtype (F32 or BF16); mean and rstd are forward's F32 statistics; dWeight and
    /// dBias are F32 or of the dtype.
    /// </remarks>
    public void LayerNormBackward(Tensor dOutput, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        var pdy = Pointer(dOutput, nameof(dOutput));
        var px = Pointer(x, nameof(x));
        var pw = Pointer(weight, nameof(weight));
        var pm = Pointer(mean, nameof(mean));
        var pr = Pointer(rstd, nameof(rstd));
        var pdx = OptionalPointer(dx, nameof(dx));
        OptionalPointer(dWeight, nameof(dWeight));
        OptionalPointer(dBias, nameof(dBias));
        if (x.Rank == 0) throw new ArgumentException("LayerNormBackward: x must have a channel dimension, got a scalar", nameof(x));
        int channels = x.Size(-1), rows = Int(x.ElementCount / Math.Max(channels, 1), "LayerNorm rows");
        var dtype = x.DType;
        RequireDType(x, nameof(LayerNormBackward), nameof(x), DType.F32, DType.BF16);
        RequireCount(dOutput, x.ElementCount, $"LayerNormBackward dOutput (like x [{x.ShapeText}])");
        RequireSameDType(dOutput, dtype, nameof(LayerNormBackward), nameof(dOutput));
        RequireVector(weight, channels, "LayerNormBackward weight");
        RequireSameDType(weight, dtype, nameof(LayerNormBackward), nameof(weight));
        foreach (var (statistic, name) in new[] { (mean, nameof(mean)), (rstd, nameof(rstd)) })
        {
            RequireCount(statistic, rows, $"LayerNormBackward {name} [{rows}]");
            RequireSameDType(statistic, DType.F32, nameof(LayerNormBackward), name);
        }
        if (dx != null)
        {
            RequireCount(dx, x.ElementCount, $"LayerNormBackward dx (like x [{x.ShapeText}])");
            RequireSameDType(dx, dtype, nameof(LayerNormBackward), nameof(dx));
        }
        foreach (var (gradient, name) in new[] { (dWeight, nameof(dWeight)), (dBias, nameof(dBias)) })
        {
            if (gradient is null) continue;
            RequireVector(gradient, channels, $"LayerNormBackward {name}");
            RequireDType(gradient, nameof(LayerNormBackward), name, DType.F32, dtype);
        }
        if (rows == 0 || channels == 0) return;
        AccumulateInSingle(dWeight, nameof(dWeight), pdw => AccumulateInSingle(dBias, nameof(dBias), pdb =>
            LayerNormKernels.LayerNormBackward(_device, dtype, pdy, px, pw, pm, pr, pdx, pdw, pdb, rows, channels, _stream)));
    }

    /// <summary>
    /// Runs <paramref name="accumulate"/> on an fp32 view of the parameter gradient <paramref name="gradient"/>: its own
    /// memory when it is F32; otherwise an fp32 scratch copy (widened exactly), rounded back once afterwards. A null
    /// gradient passes the null pointer (not wanted).
    /// </summary>
    private void AccumulateInSingle(Tensor? gradient, string argument, Action<DevicePtr> accumulate)
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
