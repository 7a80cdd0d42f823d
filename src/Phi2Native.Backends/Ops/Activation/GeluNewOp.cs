using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Activation;

/// <summary>
/// gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise (Phi-2's hidden_act), in fp32 math
/// whatever the storage dtype; backward writes dx (=) from dOutput and the saved x. The contract is checked here, once.
/// </summary>
internal sealed class GeluNewOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("GeluNew", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly Tensor _x;

    private GeluNewOp(Tensor x) : base(x) => _x = x;

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>gelu_new(x), recorded on the tape.</summary>
    public static Tensor Apply(Tensor x) => Record(new GeluNewOp(x), Forward(x));

    /// <summary>The forward alone: y like x.</summary>
    /// <exception cref="NotSupportedException">The backend does not compute it in x's dtype.</exception>
    public static Tensor Forward(Tensor x)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        OpContract.OnBackend(x, x?.Backend!, Info.Name, nameof(x));
        Info.RequireSupported(x!, nameof(x));
        return x!.Backend switch
        {
            CpuBackend cpu => CpuGelu.Forward(cpu, x),
            CudaBackend cuda => GeluKernels.Forward(cuda, x),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>The gradient alone: dx (=) = dOutput * gelu_new'(x); dOutput and dx like x (dx may be dOutput).</summary>
    /// <exception cref="ArgumentException">dOutput or dx differs from x in element count or dtype.</exception>
    public static void Backward(Tensor dOutput, Tensor x, Tensor dx)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "GeluNewBackward";
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        OpContract.OnBackend(dOutput, x!.Backend, op, nameof(dOutput));
        OpContract.OnBackend(dx, x.Backend, op, nameof(dx));
        Info.RequireSupported(x, nameof(x));
        foreach (var (tensor, name) in new[] { (dOutput, nameof(dOutput)), (dx, nameof(dx)) })
        {
            OpContract.Count(tensor, x.ElementCount, op, name, $"like x [{x.ShapeText}]");
            OpContract.DType(tensor, x.DType, op, name);
        }
        switch (x.Backend)
        {
            case CpuBackend: CpuGelu.Backward(dOutput, x, dx); break;
            case CudaBackend cuda: GeluKernels.Backward(cuda, dOutput, x, dx); break;
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dx = context.NewGradient(_x)!;
        Backward(dOutput, _x, dx);
        context.Deliver(_x, dx);
    }
}
