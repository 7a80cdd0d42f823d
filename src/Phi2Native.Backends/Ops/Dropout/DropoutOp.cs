using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Dropout;

/// <summary>
/// Inverted dropout with a counter-based mask (Determinism.DropoutMask): element i is kept when its draw from (seed, i)
/// passes p, and scaled by 1 / (1 - p); bit for bit alike on both backends. Nothing is stored; backward recomputes the
/// mask from the seed. The contract is checked here, once.
/// </summary>
internal sealed class DropoutOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("Dropout", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly double _probability;
    private readonly ulong _seed;

    private DropoutOp(Tensor x, double probability, ulong seed) : base(x) => (_probability, _seed) = (probability, seed);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>Dropout, recorded on the tape; p = 0 returns x itself.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is not in [0, 1) (NaN included).</exception>
    public static Tensor Apply(Tensor x, double probability, ulong seed)
    {
        CheckProbability(probability);
        if (probability == 0) return x;
        return Record(new DropoutOp(x, probability, seed), Forward(x, probability, seed));
    }

    /// <summary>The forward alone: y like x.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is not in [0, 1).</exception>
    public static Tensor Forward(Tensor x, double probability, ulong seed)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        OpContract.OnBackend(x, x?.Backend!, Info.Name, nameof(x));
        Info.RequireSupported(x!, nameof(x));
        CheckProbability(probability);
        return x!.Backend switch
        {
            CpuBackend cpu => CpuDropout.Forward(cpu, x, probability, seed),
            CudaBackend cuda => DropoutKernels.Forward(cuda, x, probability, seed),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>The gradient alone: dx (=) = the forward's mask and scale applied to dOutput; dx may be dOutput.</summary>
    /// <exception cref="ArgumentException">dx differs from dOutput in element count or dtype.</exception>
    public static void Backward(Tensor dOutput, Tensor dx, double probability, ulong seed)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "DropoutBackward";
        OpContract.OnBackend(dOutput, dOutput?.Backend!, op, nameof(dOutput));
        OpContract.OnBackend(dx, dOutput!.Backend, op, nameof(dx));
        Info.RequireSupported(dOutput, nameof(dOutput));
        OpContract.Count(dx, dOutput.ElementCount, op, nameof(dx), $"like dOutput [{dOutput.ShapeText}]");
        OpContract.DType(dx, dOutput.DType, op, nameof(dx));
        CheckProbability(probability);
        switch (dOutput.Backend)
        {
            case CpuBackend: CpuDropout.Backward(dOutput, dx, probability, seed); break;
            case CudaBackend cuda: DropoutKernels.Backward(cuda, dOutput, dx, probability, seed); break;
            default: throw OpContract.NoImplementation(Info, dOutput.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var x = Inputs[0]!;
        var dx = context.NewGradient(x)!;
        Backward(dOutput, dx, _probability, _seed);
        context.Deliver(x, dx);
    }

    private static void CheckProbability(double probability)
    {
        if (!NumberChecks.IsProbability(probability))
            throw new ArgumentOutOfRangeException(nameof(probability), probability, "dropout probability must be in [0, 1)");
    }
}
