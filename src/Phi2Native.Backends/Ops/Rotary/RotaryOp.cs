using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Rotary;

/// <summary>
/// Phi-2's partial rotary position embedding (half-split, GPT-NeoX convention) on dims [0, rotaryDim) of each head of
/// x [B, T, H, D]; dims [rotaryDim, D) pass through. Token t of batch row b sits at position positions[b] + t, where
/// positions is I32 [B] on the backend (a KV cache's rows may hold different lengths), or null for every row starting
/// at 0 (training, a prompt into an empty cache): one op for both, read on the device. Backward rotates dOutput back
/// by the same angles. The contract is checked here, once.
/// </summary>
internal sealed class RotaryOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("Rotary", BackendOp.CpuFloats, [DType.F32, DType.BF16]);

    private readonly int _rotaryDim;
    private readonly double _theta;
    private readonly Tensor? _positions;

    private RotaryOp(Tensor x, int rotaryDim, double theta, Tensor? positions) : base(x) =>
        (_rotaryDim, _theta, _positions) = (rotaryDim, theta, positions);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The rotation, recorded on the tape; <paramref name="positions"/> must outlive the backward pass.</summary>
    public static Tensor Apply(Tensor x, int rotaryDim, double theta, Tensor? positions = null) =>
        Record(new RotaryOp(x, rotaryDim, theta, positions), Forward(x, rotaryDim, theta, positions));

    /// <summary>The forward alone: y like x.</summary>
    /// <exception cref="ArgumentException">x is not [B, T, H, D], or positions not I32 [B].</exception>
    /// <exception cref="ArgumentOutOfRangeException">rotaryDim is odd or above D, or theta not finite and &gt; 0; a negative position (the CPU backend; the CUDA backend gives its row NaN).</exception>
    public static Tensor Forward(Tensor x, int rotaryDim, double theta, Tensor? positions)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        Check("Rotary", x, rotaryDim, theta, positions);
        return x.Backend switch
        {
            CpuBackend cpu => CpuRotary.Forward(cpu, x, rotaryDim, theta, positions),
            CudaBackend cuda => RotaryKernels.Forward(cuda, x, rotaryDim, theta, positions),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>The gradient alone: dx (=) is dOutput rotated back at the same positions; dx may be dOutput.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract.</exception>
    public static void Backward(Tensor dOutput, Tensor dx, int rotaryDim, double theta, Tensor? positions)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "RotaryBackward";
        Check(op, dOutput, rotaryDim, theta, positions);
        OpContract.OnBackend(dx, dOutput.Backend, op, nameof(dx));
        OpContract.Shape(dx, dOutput.Shape, op, nameof(dx));
        OpContract.DType(dx, dOutput.DType, op, nameof(dx));
        switch (dOutput.Backend)
        {
            case CpuBackend: CpuRotary.Backward(dOutput, dx, rotaryDim, theta, positions); break;
            case CudaBackend cuda: RotaryKernels.Backward(cuda, dOutput, dx, rotaryDim, theta, positions); break;
            default: throw OpContract.NoImplementation(Info, dOutput.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var x = Inputs[0]!;
        var dx = context.NewGradient(x)!;
        Backward(dOutput, dx, _rotaryDim, _theta, _positions);
        context.Deliver(x, dx);
    }

    private static void Check(string op, Tensor x, int rotaryDim, double theta, Tensor? positions)
    {
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        OpContract.OnBackendIfAny(positions, x!.Backend, op, nameof(positions));
        Info.RequireSupported(x, nameof(x));
        OpContract.Rank(x, 4, op, nameof(x), "[B, T, H, D]");
        if (rotaryDim < 0 || rotaryDim > x.Size(3) || rotaryDim % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(rotaryDim), rotaryDim, $"{op}: rotaryDim must be even and in [0, D = {x.Size(3)}]");
        if (rotaryDim > 0 && !(theta > 0 && double.IsFinite(theta)))
            throw new ArgumentOutOfRangeException(nameof(theta), theta, $"{op}: theta must be finite and > 0");
        if (positions is null) return;
        OpContract.Vector(positions, x.Size(0), op, nameof(positions));
        OpContract.DType(positions, DType.I32, op, nameof(positions));
    }
}
