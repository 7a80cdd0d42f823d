using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Embeddings;

/// <summary>
/// The token embedding lookup (model.embed_tokens): output [..., C] = weight [V, C] at ids [...] (I32); backward
/// scatters dOutput into dWeight (+=), deterministically (each row's sum in increasing position, bit for bit alike on
/// both backends). Ids must lie in [0, V): they come from the host, which checks them before upload
/// (Phi2Model.CreateInputIds), so no backend reads them back; the CPU backend checks them again for free, and the CUDA
/// kernels never touch memory out of bounds for a bad one (a NaN row forward, skipped backward). The contract is
/// checked here, once.
/// </summary>
internal sealed class EmbeddingOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in (the table's; the output has it too).</summary>
    public static BackendOp Info { get; } = new("Embedding", BackendOp.CpuFloats, [DType.F32, DType.BF16]);

    private readonly Tensor _weight, _ids;

    private EmbeddingOp(Tensor weight, Tensor ids) : base(weight) => (_weight, _ids) = (weight, ids);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The lookup, recorded on the tape (the gradient flows to the table only).</summary>
    public static Tensor Apply(Tensor weight, Tensor ids) => Record(new EmbeddingOp(weight, ids), Forward(weight, ids));

    /// <summary>The forward alone: [..ids, C] of the table's dtype.</summary>
    /// <exception cref="ArgumentException">weight is not [V, C] or ids not I32.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, V) (the CPU backend only; see the class).</exception>
    public static Tensor Forward(Tensor weight, Tensor ids)
    {
        using var profile = ProfileScope.Op(Info.Name, weight.Backend);
        int count = Check("Embedding", weight, ids);
        return weight.Backend switch
        {
            CpuBackend cpu => CpuEmbedding.Forward(cpu, weight, ids),
            CudaBackend cuda => EmbeddingKernels.Forward(cuda, weight, ids, count),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>The gradient alone: dWeight [V, C] += dOutput [..ids, C] scattered at ids; dWeight of the table's dtype or F32.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract.</exception>
    public static void Backward(Tensor dOutput, Tensor ids, Tensor dWeight)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "EmbeddingBackward";
        int count = Check(op, dWeight, ids);
        OpContract.OnBackend(dOutput, dWeight.Backend, op, nameof(dOutput));
        Info.RequireSupported(dOutput, nameof(dOutput));
        OpContract.Count(dOutput, (long)count * dWeight.Size(1), op, nameof(dOutput), $"[{count}, {dWeight.Size(1)}]");
        OpContract.GradientDType(dWeight, dOutput.DType, op, nameof(dWeight));
        switch (dWeight.Backend)
        {
            case CpuBackend: CpuEmbedding.Backward(dOutput, ids, dWeight); break;
            case CudaBackend cuda: EmbeddingKernels.Backward(cuda, dOutput, ids, dWeight, count); break;
            default: throw OpContract.NoImplementation(Info, dWeight.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context) =>
        Backward(dOutput, _ids, context.AccumulatorFor(_weight)!);

    private static int Check(string op, Tensor weight, Tensor ids)
    {
        OpContract.OnBackend(weight, weight?.Backend!, op, nameof(weight));
        OpContract.OnBackend(ids, weight!.Backend, op, nameof(ids));
        Info.RequireSupported(weight, nameof(weight));
        OpContract.Rank(weight, 2, op, nameof(weight), "[V, C]");
        OpContract.DType(ids, DType.I32, op, nameof(ids));
        return OpContract.Int(ids.ElementCount, op, "ids");
    }
}
