using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Qkv;

/// <summary>
/// A layer's q, k and v projections as one op: qkv [N, 3C] = x [B, T, C] W^T + b with W the [3C, C] q/k/v weight, split
/// into heads q, k, v [B, T, H, D], with Phi-2's partial rotary (RotaryOp's) on q and k at positions positions[b] + t
/// (I32 [B] on the backend, or null for 0 + t). Training: <see cref="Apply"/> gives all three and records the op;
/// inference through a KV cache: <see cref="Cached"/> writes k and v into the caches' rows (KvCacheOp's rule) and gives q.
/// Backward: dq and dk rotated back and dv into one [N, 3C] gradient, then dx, accumulated (+=) into x's gradient by
/// the dX GEMM itself (beta 1: x, the layer's normalized input, already holds the MLP branch's dx, so no add follows),
/// and the weight and bias gradients (+=) of the projections that train only. On the CUDA backend one GEMM and one kernel each way (kernels/qkv.cu); on
/// the CPU the unfused ops, the reference. With LoRA modules (<see cref="QkvParameters.Adapters"/>) the [N, 3C] product
/// gains their branches (<see cref="LoraQkvOp"/>'s forward, u saved) before the split; backward, LoraQkvOp's backward
/// takes the one [N, 3C] gradient first (the adapters' dA, dB += and dx +=), then the base's products from the same
/// gradient. The contract is checked here, once.
/// </summary>
internal sealed class QkvProjectionOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("QkvProjection", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly Tensor _x;
    private readonly QkvParameters _parameters;
    private readonly QkvShape _shape;
    private readonly Tensor? _positions;
    private Tensor? _u;
    private Tensor? _dk, _dv;

    // The adapters' A and B are inputs too: the tape records the op when only they train, and delivers their gradients.
    private QkvProjectionOp(Tensor x, QkvParameters parameters, QkvShape shape, Tensor? positions, Tensor? u)
        : base([x, .. parameters.Weights, .. parameters.Biases, .. parameters.AdapterTensors]) =>
        (_x, _parameters, _shape, _positions, _u) = (x, parameters, shape, positions, u);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>q, k, v [B, T, H, D], recorded on the tape (q is the op's output; k and v hand their gradients to it); <paramref name="positions"/> must outlive the backward pass.</summary>
    public static (Tensor Q, Tensor K, Tensor V) Apply(Tensor x, QkvParameters parameters, QkvShape shape, Tensor? positions = null)
    {
        var (q, k, v) = Forward(x, parameters, shape, positions, null, null, out var u);
        var op = new QkvProjectionOp(x, parameters, shape, positions, u);
        q = Record(op, q);
        return (q, Record(new QkvPartOp(op, q, 1), k!), Record(new QkvPartOp(op, q, 2), v!));
    }

    /// <summary>
    /// Inference through a KV cache (not recorded): k and v of x's positions go into rows [p, p + T) of
    /// <paramref name="keys"/> and <paramref name="values"/> [B, Tmax, H, D], p = positions[b]; gives q.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A row's rows fall outside the cache, or a negative position (the CPU backend; the CUDA backend skips the row's cache write and gives its q NaN).</exception>
    public static Tensor Cached(Tensor x, QkvParameters parameters, QkvShape shape, Tensor positions, Tensor keys, Tensor values)
    {
        ArgumentNullException.ThrowIfNull(positions);
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(values);
        return Forward(x, parameters, shape, positions, keys, values).Q;
    }

    /// <summary>The forward alone: q, and k and v unless <paramref name="keys"/> and <paramref name="values"/> (caches) took them.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="ArgumentOutOfRangeException">rotaryDim is odd or above D, theta not finite and &gt; 0, or a position out of range (the CPU backend).</exception>
    public static (Tensor Q, Tensor? K, Tensor? V) Forward(Tensor x, QkvParameters parameters, QkvShape shape, Tensor? positions, Tensor? keys, Tensor? values)
    {
        var result = Forward(x, parameters, shape, positions, keys, values, out var u);
        u?.Dispose();
        return result;
    }

    /// <summary>The forward alone, and with adapters u [B, T, R] (LoraQkvOp's saved product; null without adapters or rows), for the backward.</summary>
    internal static (Tensor Q, Tensor? K, Tensor? V) Forward(Tensor x, QkvParameters parameters, QkvShape shape, Tensor? positions, Tensor? keys, Tensor? values,
        out Tensor? u)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        Check(Info.Name, x, parameters, shape, positions, keys, values);
        switch (x.Backend)
        {
            case CpuBackend cpu: return CpuQkvProjection.Forward(cpu, x, parameters, shape, positions, keys, values, out u);
            case CudaBackend cuda: return QkvKernels.Forward(cuda, x, parameters, shape, positions, keys, values, out u);
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <summary>
    /// The gradients alone, from dq, dk, dv [B, T, H, D] (any may be null: no gradient reached it): dx (+=) like x, and
    /// the weight [C, C] and bias [C] gradients (+=, x's dtype or F32 over a 16-bit x) of each projection, null where
    /// that projection is frozen (no product is computed for it). With adapters, <paramref name="u"/> is the forward's and
    /// <paramref name="adapterGradients"/> holds dA and dB (+=, null where absent or frozen) of q, k, v: 6 slots, A then B each;
    /// <paramref name="adapterAccumulates"/>, in the same slots, false where that gradient is written (=) instead (new this
    /// step: no zero fill before it); null: all accumulate.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    public static void Backward(Tensor? dq, Tensor? dk, Tensor? dv, Tensor x, QkvParameters parameters, QkvShape shape, Tensor? positions,
        Tensor? dx, Tensor?[] weightGradients, Tensor?[] biasGradients, Tensor? u = null, Tensor?[]? adapterGradients = null,
        bool[]? adapterAccumulates = null)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, x.Backend);
        const string op = "QkvProjectionBackward";
        Check(op, x, parameters, shape, positions, null, null);
        int[] heads = [x.Size(0), x.Size(1), shape.Heads, shape.HeadDim];
        foreach (var (gradient, name) in new[] { (dq, nameof(dq)), (dk, nameof(dk)), (dv, nameof(dv)) })
        {
            if (gradient is null) continue;
            OpContract.OnBackend(gradient, x.Backend, op, name);
            OpContract.Shape(gradient, heads, op, name);
            OpContract.DType(gradient, x.DType, op, name);
        }
        if (dx is not null)
        {
            OpContract.OnBackend(dx, x.Backend, op, nameof(dx));
            OpContract.Shape(dx, x.Shape, op, nameof(dx));
            OpContract.DType(dx, x.DType, op, nameof(dx));
        }
        if (weightGradients is not { Length: 3 }) throw new ArgumentException($"{op}: expected 3 weight gradients (q, k, v; null where frozen)", nameof(weightGradients));
        if (biasGradients is not { Length: 3 }) throw new ArgumentException($"{op}: expected 3 bias gradients (q, k, v; null where frozen)", nameof(biasGradients));
        for (int j = 0; j < 3; j++)
        {
            if (weightGradients[j] is { } dw)
            {
                OpContract.OnBackend(dw, x.Backend, op, $"{QkvParameters.Names[j]} weight gradient");
                OpContract.Shape(dw, parameters.Weights[j].Shape, op, $"{QkvParameters.Names[j]} weight gradient");
                OpContract.GradientDType(dw, x.DType, op, $"{QkvParameters.Names[j]} weight gradient");
            }
            if (biasGradients[j] is { } db)
            {
                OpContract.OnBackend(db, x.Backend, op, $"{QkvParameters.Names[j]} bias gradient");
                OpContract.Shape(db, parameters.Biases[j].Shape, op, $"{QkvParameters.Names[j]} bias gradient");
                OpContract.GradientDType(db, x.DType, op, $"{QkvParameters.Names[j]} bias gradient");
            }
        }
        var adapters = parameters.Adapted && x.ElementCount > 0 ? new QkvAdapterGradients(parameters.Adapters!, u, adapterGradients, op, adapterAccumulates) : null;
        switch (x.Backend)
        {
            case CpuBackend: CpuQkvProjection.Backward(dq, dk, dv, x, parameters, shape, positions, dx, weightGradients, biasGradients, adapters); break;
            case CudaBackend cuda: QkvKernels.Backward(cuda, dq, dk, dv, x, parameters, shape, positions, dx, weightGradients, biasGradients, adapters); break;
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <summary>dk or dv (index 1, 2), handed over by the op that recorded k or v; kept until this op's backward.</summary>
    internal void Receive(int index, Tensor gradient)
    {
        ref var slot = ref index == 1 ? ref _dk : ref _dv;
        slot?.Dispose();
        slot = gradient;
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        // Accumulated into x's pending gradient (the MLP's dx, delivered first) by the dX product itself.
        var dx = context.AccumulatorFor(_x);
        // Gradients new to this step become views of one buffer, so adjacent trained projections take one dW GEMM.
        var weightGradients = context.AccumulatorsFor(_parameters.Weights);
        var biasGradients = context.AccumulatorsFor(_parameters.Biases);
        // New adapter gradients are written by the LoRA kernels, not zero-filled first; none is computed without rows.
        var adapterTensors = _parameters.AdapterTensors;
        var adapterAccumulates = new bool[adapterTensors.Length];
        var adapterGradients = new Tensor?[adapterTensors.Length];
        for (int i = 0; i < adapterTensors.Length; i++)
        {
            adapterAccumulates[i] = true;
            adapterGradients[i] = _x.ElementCount > 0 ? context.GradientFor(adapterTensors[i], out adapterAccumulates[i]) : context.AccumulatorFor(adapterTensors[i]);
        }
        Backward(dOutput, _dk, _dv, _x, _parameters, _shape, _positions, dx, weightGradients, biasGradients, _u, adapterGradients, adapterAccumulates);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved()
    {
        _dk?.Dispose();
        _dv?.Dispose();
        _u?.Dispose();
        (_dk, _dv, _u) = (null, null, null);
    }

    private static void Check(string op, Tensor x, QkvParameters parameters, QkvShape shape, Tensor? positions, Tensor? keys, Tensor? values)
    {
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        ArgumentNullException.ThrowIfNull(parameters);
        Info.RequireSupported(x!, nameof(x));
        OpContract.Rank(x!, 3, op, nameof(x), "[B, T, C]");
        if (shape.Heads <= 0 || shape.HeadDim <= 0 || (long)shape.Heads * shape.HeadDim != x!.Size(2))
            throw new ArgumentException($"{op}: H = {shape.Heads} heads of D = {shape.HeadDim} do not make x's C = {x!.Size(2)}", nameof(shape));
        if (shape.RotaryDim < 0 || shape.RotaryDim > shape.HeadDim || shape.RotaryDim % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(shape), shape.RotaryDim, $"{op}: rotaryDim must be even and in [0, D = {shape.HeadDim}]");
        if (shape.RotaryDim > 0 && !(shape.Theta > 0 && double.IsFinite(shape.Theta)))
            throw new ArgumentOutOfRangeException(nameof(shape), shape.Theta, $"{op}: theta must be finite and > 0");
        int c = x.Size(2);
        if (parameters.Weights is not { Length: 3 } || parameters.Biases is not { Length: 3 })
            throw new ArgumentException($"{op}: expected the weights and biases of q_proj, k_proj and v_proj (3 each)", nameof(parameters));
        for (int j = 0; j < 3; j++)
        {
            string name = QkvParameters.Names[j];
            OpContract.OnBackend(parameters.Weights[j], x.Backend, op, $"{name} weight");
            OpContract.Shape(parameters.Weights[j], [c, c], op, $"{name} weight");
            OpContract.DType(parameters.Weights[j], x.DType, op, $"{name} weight");
            OpContract.OnBackend(parameters.Biases[j], x.Backend, op, $"{name} bias");
            OpContract.Vector(parameters.Biases[j], c, op, $"{name} bias");
            OpContract.DType(parameters.Biases[j], x.DType, op, $"{name} bias");
        }
        if (parameters.Adapters is { Length: not 3 })
            throw new ArgumentException($"{op}: expected one adapter slot each for q_proj, k_proj and v_proj (3; null where none)", nameof(parameters));
        if (positions is not null)
        {
            OpContract.OnBackend(positions, x.Backend, op, nameof(positions));
            OpContract.Vector(positions, x.Size(0), op, nameof(positions));
            OpContract.DType(positions, DType.I32, op, nameof(positions));
        }
        if ((keys is null) != (values is null))
            throw new ArgumentException($"{op}: the key and value caches come together (one of them is null)", keys is null ? nameof(keys) : nameof(values));
        if (keys is null) return;
        if (positions is null) throw new ArgumentException($"{op}: writing into a KV cache needs each row's position (positions is null)", nameof(positions));
        foreach (var (cache, name) in new[] { (keys, nameof(keys)), (values!, nameof(values)) })
        {
            OpContract.OnBackend(cache, x.Backend, op, name);
            OpContract.Rank(cache, 4, op, name, "[B, Tmax, H, D]");
            if (cache.Size(0) != x.Size(0) || cache.Size(2) != shape.Heads || cache.Size(3) != shape.HeadDim || cache.Size(1) < x.Size(1))
                throw new ArgumentException($"{op}: {name} [{cache.ShapeText}] is not [B = {x.Size(0)}, Tmax >= T = {x.Size(1)}, H = {shape.Heads}, D = {shape.HeadDim}]", name);
            OpContract.DType(cache, x.DType, op, name);
        }
        if (!keys.Shape.SequenceEqual(values!.Shape))
            throw new ArgumentException($"{op}: values [{values.ShapeText}] differ from keys [{keys.ShapeText}]", nameof(values));
    }
}

/// <summary>
/// Records k or v of a <see cref="QkvProjectionOp"/> on the tape (an op has one output, q): its backward hands the
/// gradient to that op, whose one backward then takes dq, dk and dv together. Recorded after it, so it runs before it.
/// </summary>
internal sealed class QkvPartOp : AutogradOp
{
    private readonly QkvProjectionOp _projection;
    private readonly int _index;

    /// <summary>Part <paramref name="index"/> (1 k, 2 v) of <paramref name="projection"/>, whose output is <paramref name="q"/>.</summary>
    public QkvPartOp(QkvProjectionOp projection, Tensor q, int index) : base(q) => (_projection, _index) = (projection, index);

    /// <inheritdoc/>
    public override string Name => QkvProjectionOp.Info.Name;

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context) =>
        // The tape frees dOutput after this call: a second reference (a view of the same memory) keeps it for the op.
        _projection.Receive(_index, TensorScope.Detach(dOutput.Reshape(dOutput.Shape.ToArray())));
}

/// <summary>
/// What the backward of an adapted <see cref="QkvProjectionOp"/> hands LoraQkvOp's backward: the modules (q, k, v), the
/// forward's u and dA, dB of each (null where absent or frozen).
/// </summary>
internal sealed class QkvAdapterGradients
{
    /// <summary>The modules and gradients, checked: u is required, 6 gradient slots (q's A, B, k's, v's) or null for none.</summary>
    public QkvAdapterGradients(LoraQkvModule?[] modules, Tensor? u, Tensor?[]? gradients, string op, bool[]? accumulates = null)
    {
        if (u is null) throw new ArgumentException($"{op}: the projections carry LoRA modules; their forward's u is required", nameof(u));
        if (gradients is not null and not { Length: 6 })
            throw new ArgumentException($"{op}: expected 6 adapter gradients (dA, dB of q, k, v; null where absent or frozen)", nameof(gradients));
        Modules = modules;
        U = u;
        DA = [.. Enumerable.Range(0, 3).Select(m => gradients?[2 * m])];
        DB = [.. Enumerable.Range(0, 3).Select(m => gradients?[2 * m + 1])];
        if (accumulates is not null && accumulates.Length != 6)
            throw new ArgumentException($"{op}: expected 6 adapter accumulate flags, as the gradients", nameof(accumulates));
        for (int m = 0; m < 3; m++)
        {
            if (accumulates?[2 * m] ?? true) AccumulateA |= 1 << m;
            if (accumulates?[2 * m + 1] ?? true) AccumulateB |= 1 << m;
        }
    }

    /// <summary>Bit m set: module m's dA accumulates (+=); clear: it is written (=).</summary>
    public int AccumulateA { get; }

    /// <summary>Bit m set: module m's dB accumulates (+=); clear: it is written (=).</summary>
    public int AccumulateB { get; }

    /// <summary>The LoRA modules of q, k, v.</summary>
    public LoraQkvModule?[] Modules { get; }

    /// <summary>The forward's u [B, T, R].</summary>
    public Tensor U { get; }

    /// <summary>dA of q, k, v (+=).</summary>
    public Tensor?[] DA { get; }

    /// <summary>dB of q, k, v (+=).</summary>
    public Tensor?[] DB { get; }

    /// <summary>LoraQkvOp's backward from dqkv [B, T, 3C]: dA, dB (+=) and dx (+=, x's gradient so far is in it).</summary>
    public void Apply(Tensor dqkv, Tensor x, Tensor? dx) => LoraQkvOp.Backward(dqkv, x, U, Modules, dx, DA, DB, accumulateDx: true, AccumulateA, AccumulateB);
}
