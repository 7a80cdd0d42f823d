using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// The LoRA branches of q_proj, k_proj and v_proj added to one fused QKV projection's output: x [..., C] and base [..., 3 C]
/// (q, k, v in column blocks [0, C), [C, 2 C), [2 C, 3 C)); each of q, k, v adapted or not (<see cref="LoraQkvModule"/>,
/// at least one present), with its own A [r, C], B [C, r], scaling and dropout mask, exactly as three <see cref="LoraOp"/>s
/// on the split output would compute. y [..., 3 C] like base. Forward saves u [..., R] (R the present ranks' sum). Backward:
/// base gets dY itself; each present module's dB, dA (+=) and the branches' dx summed into x's gradient (written, or added
/// into one already pending: BackwardContext.PendingGradient). The CUDA backend runs 2 launches forward and at most 4
/// backward for any subset (kernels/lora_qkv.cu); the CPU backend is the reference (<see cref="CpuLoraQkv"/>). The contract
/// is checked here, once.
/// </summary>
internal sealed class LoraQkvOp : AutogradOp
{
    /// <summary>The op and the activation dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("LoraQkv", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly LoraQkvModule?[] _modules;
    private readonly Tensor _u;

    private LoraQkvOp(Tensor x, Tensor baseOutput, LoraQkvModule?[] modules, Tensor u)
        : base(x, baseOutput, modules[0]?.A, modules[0]?.B, modules[1]?.A, modules[1]?.B, modules[2]?.A, modules[2]?.B) => (_modules, _u) = (modules, u);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The branches added to <paramref name="baseOutput"/> (the fused QKV projection's [..., 3 C]), recorded on the tape.</summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract, or no module is present.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scaling is not finite, or a dropout not in [0, 1) (NaN included).</exception>
    public static Tensor Apply(Tensor x, Tensor baseOutput, LoraQkvModule? q, LoraQkvModule? k, LoraQkvModule? v)
    {
        LoraQkvModule?[] modules = [q, k, v];
        var y = Forward(x, baseOutput, modules, out var u);
        return Record(new LoraQkvOp(x, baseOutput, modules, u), y);
    }

    /// <summary>The forward alone: y like <paramref name="baseOutput"/>, and u [..., R] in the adapters' dtype.</summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract, or no module is present.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scaling is not finite, or a dropout not in [0, 1).</exception>
    public static Tensor Forward(Tensor x, Tensor baseOutput, LoraQkvModule?[] modules, out Tensor u)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var (rows, channels) = Check(Info.Name, x, baseOutput, modules);
        switch (x.Backend)
        {
            case CpuBackend cpu: return CpuLoraQkv.Forward(cpu, x, baseOutput, modules, rows, channels, out u);
            case CudaBackend cuda: return LoraQkvKernels.Forward(cuda, x, baseOutput, modules, rows, channels, out u);
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <summary>
    /// The gradients alone: dx like x (=, or += with <paramref name="accumulateDx"/>), and per module m (q, k, v) dA[m]
    /// like its A and dB[m] like its B (+=), each null when not needed (or its module absent); u is the forward's.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scaling is not finite, or a dropout not in [0, 1).</exception>
    /// <remarks><paramref name="accumulateA"/>, <paramref name="accumulateB"/>: bit m set, module m's gradient accumulates (+=); clear, it is written (=).</remarks>
    public static void Backward(Tensor dOutput, Tensor x, Tensor u, LoraQkvModule?[] modules, Tensor? dx, Tensor?[] dA, Tensor?[] dB, bool accumulateDx = false,
        int accumulateA = 0b111, int accumulateB = 0b111)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "LoraQkvBackward";
        var (rows, channels) = Check(op, x, dOutput, modules);
        var backend = x.Backend;
        int total = modules.Sum(m => m is { } present ? present.A.Size(0) : 0);
        OpContract.OnBackend(u, backend, op, nameof(u));
        OpContract.Count(u, (long)rows * total, op, nameof(u), $"[{rows}, {total}]");
        OpContract.DType(u, modules.First(m => m is not null)!.Value.A.DType, op, nameof(u));
        if (dA.Length != 3 || dB.Length != 3) throw new ArgumentException($"{op}: dA and dB need one entry per module (q, k, v)", nameof(dA));
        if (dx is not null)
        {
            OpContract.OnBackend(dx, backend, op, nameof(dx));
            OpContract.Shape(dx, x.Shape, op, nameof(dx));
            OpContract.DType(dx, x.DType, op, nameof(dx));
        }
        for (int m = 0; m < 3; m++)
            foreach (var (gradient, like, name) in new[] { (dA[m], modules[m]?.A, nameof(dA)), (dB[m], modules[m]?.B, nameof(dB)) })
            {
                if (gradient is null) continue;
                if (like is null) throw new ArgumentException($"{op}: {name}[{m}] is given but module {"qkv"[m]} is absent", name);
                OpContract.OnBackend(gradient, backend, op, name);
                OpContract.Shape(gradient, like.Shape, op, name);
                OpContract.DType(gradient, like.DType, op, name);
            }
        if (dx is null && dA.All(g => g is null) && dB.All(g => g is null)) return;
        switch (backend)
        {
            case CpuBackend cpu: CpuLoraQkv.Backward(cpu, dOutput, x, u, modules, dx, dA, dB, accumulateDx, rows, channels, accumulateA, accumulateB); break;
            case CudaBackend cuda: LoraQkvKernels.Backward(cuda, dOutput, x, u, modules, dx, dA, dB, accumulateDx, rows, channels, accumulateA, accumulateB); break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var (x, baseOutput) = (Inputs[0]!, Inputs[1]!);
        var pending = context.PendingGradient(x);
        var dx = pending ?? context.NewGradient(x);
        Tensor?[] dA = new Tensor?[3], dB = new Tensor?[3];
        int accumulateA = 0, accumulateB = 0;
        for (int m = 0; m < 3; m++)
        {
            dA[m] = context.GradientFor(_modules[m]?.A, out bool adds);
            accumulateA |= adds ? 1 << m : 0;
            dB[m] = context.GradientFor(_modules[m]?.B, out adds);
            accumulateB |= adds ? 1 << m : 0;
        }
        Backward(dOutput, x, _u, _modules, dx, dA, dB, accumulateDx: pending is not null, accumulateA, accumulateB);
        if (pending is null) context.Deliver(x, dx);
        if (baseOutput.RequiresGrad) context.Deliver(baseOutput, dOutput.Reshape(baseOutput.Shape.ToArray()));
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved() => _u.Dispose();

    private static (int Rows, int Channels) Check(string op, Tensor x, Tensor output, LoraQkvModule?[] modules)
    {
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        var backend = x!.Backend;
        Info.RequireSupported(x, nameof(x));
        if (modules is not { Length: 3 }) throw new ArgumentException($"{op}: one module slot each for q, k and v is expected", nameof(modules));
        if (modules.All(m => m is null)) throw new ArgumentException($"{op}: no module (q, k, v) is present", nameof(modules));
        if (x.Rank == 0) throw new ArgumentException($"{op}: x is a scalar; [..., C] expected", nameof(x));
        int channels = x.Size(-1);
        if (channels == 0) throw new ArgumentException($"{op}: x [{x.ShapeText}] has no channels", nameof(x));
        int rows = OpContract.Int(x.ElementCount / channels, op, "rows");
        OpContract.OnBackend(output, backend, op, "output");
        OpContract.Shape(output, [.. x.Shape[..^1], 3 * channels], op, "output");
        OpContract.DType(output, x.DType, op, "output");
        var adapter = x.DType == DType.F64 ? DType.F64 : DType.F32;
        for (int m = 0; m < 3; m++)
        {
            if (modules[m] is not { } module) continue;
            string a = $"{"qkv"[m]}.A", b = $"{"qkv"[m]}.B";
            OpContract.OnBackend(module.A, backend, op, a);
            OpContract.OnBackend(module.B, backend, op, b);
            OpContract.Rank(module.A, 2, op, a, "[r, C]");
            OpContract.Rank(module.B, 2, op, b, "[C, r]");
            int rank = module.A.Size(0);
            if (rank == 0 || module.A.Size(1) != channels)
                throw new ArgumentException($"{op}: {a} [{module.A.ShapeText}] is not [r >= 1, {channels}]", nameof(modules));
            if (module.B.Size(0) != channels || module.B.Size(1) != rank)
                throw new ArgumentException($"{op}: {b} [{module.B.ShapeText}] is not [{channels}, {rank}]", nameof(modules));
            OpContract.DType(module.A, adapter, op, a);
            OpContract.DType(module.B, adapter, op, b);
            LoraOp.CheckBranch(module.Branch, $"modules[{m}]");
        }
        return (rows, channels);
    }
}
