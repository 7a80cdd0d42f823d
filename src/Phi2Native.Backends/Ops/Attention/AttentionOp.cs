using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// Causal scaled-dot-product attention, scores scaled by 1/sqrt(D), softmax in fp32 (F64 beside F64 inputs):
/// q [B, Tq, H, D] against k and v [B, Tk, H, D] (Tk &gt;= Tq; query i sits at position Tk - Tq + i) -> [B, Tq, H, D].
/// Forward saves only logSumExp [B, H, Tq]; backward recomputes the probabilities (flash-style memory) and writes dq,
/// dk, dv (=), each optional. <see cref="Cached"/> is the inference form over a KV cache, read in place. The contract is
/// checked here, once.
/// </summary>
internal sealed class AttentionOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in (q, k, v and the output share one).</summary>
    public static BackendOp Info { get; } = new("Attention", BackendOp.CpuFloats, [DType.F32, DType.BF16]);

    private readonly Tensor _q, _k, _v, _logSumExp;

    private AttentionOp(Tensor q, Tensor k, Tensor v, Tensor logSumExp) : base(q, k, v) =>
        (_q, _k, _v, _logSumExp) = (q, k, v, logSumExp);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>Attention, recorded on the tape.</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v)
    {
        var output = Forward(q, k, v, out var logSumExp);
        return Record(new AttentionOp(q, k, v, logSumExp), output);
    }

    /// <summary>The forward alone: the output like q, and <paramref name="logSumExp"/> [B, H, Tq] (F32; F64 beside F64 q).</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract.</exception>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, out Tensor logSumExp)
    {
        using var profile = ProfileScope.Op(Info.Name, q.Backend);
        var shape = CheckAttention("Attention", q, k, v);
        switch (q.Backend)
        {
            case CpuBackend cpu: return CpuAttention.Forward(cpu, q, k, v, shape, out logSumExp);
            case CudaBackend cuda: return AttentionKernels.Forward(cuda, q, k, v, shape, out logSumExp);
            default: throw OpContract.NoImplementation(Info, q.Backend);
        }
    }

    /// <summary>The gradients alone: dq like q, dk and dv like k (=), each null when not needed.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract.</exception>
    public static void Backward(Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "AttentionBackward";
        var shape = CheckAttention(op, q, k, v);
        var backend = q.Backend;
        foreach (var (tensor, like, name) in new[] { (dOutput, q, nameof(dOutput)), (output, q, nameof(output)), (dq, q, nameof(dq)), (dk, k, nameof(dk)), (dv, k, nameof(dv)) })
        {
            if (tensor is null) continue;
            OpContract.OnBackend(tensor, backend, op, name);
            OpContract.Shape(tensor, like.Shape, op, name);
            OpContract.DType(tensor, q.DType, op, name);
        }
        OpContract.OnBackend(logSumExp, backend, op, nameof(logSumExp));
        OpContract.Shape(logSumExp, [shape.Batch, shape.Heads, shape.QueryTime], op, nameof(logSumExp));
        OpContract.DType(logSumExp, q.DType == DType.F64 ? DType.F64 : DType.F32, op, nameof(logSumExp));
        switch (backend)
        {
            case CpuBackend: CpuAttention.Backward(dOutput, q, k, v, output, logSumExp, dq, dk, dv, shape); break;
            case CudaBackend cuda: AttentionKernels.Backward(cuda, dOutput, q, k, v, output, logSumExp, dq, dk, dv, shape); break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }

    /// <summary>
    /// Inference over a KV cache: batch row b's Tq queries attend over the first keyTimes[b] rows of its caches
    /// [B, Tmax, H, D], read in place, query i at position keyTimes[b] - Tq + i; keyTimes is I32 [B] on the backend (the
    /// rows of a cache may hold different lengths), read on the device. Row b's result is exactly
    /// <see cref="Forward"/>'s over those rows. Saves nothing. A key time outside [Tq, Tmax]: the CPU backend throws,
    /// the CUDA backend gives that row NaN.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract.</exception>
    public static Tensor Cached(Tensor q, Tensor keyCache, Tensor valueCache, Tensor keyTimes)
    {
        const string op = "CachedAttention";
        OpContract.OnBackend(q, q?.Backend!, op, nameof(q));
        var backend = q!.Backend;
        OpContract.OnBackend(keyCache, backend, op, nameof(keyCache));
        OpContract.OnBackend(valueCache, backend, op, nameof(valueCache));
        OpContract.OnBackend(keyTimes, backend, op, nameof(keyTimes));
        Info.RequireSupported(q, nameof(q));
        OpContract.Rank(q, 4, op, nameof(q), "[B, Tq, H, D]");
        OpContract.Rank(keyCache, 4, op, nameof(keyCache), "[B, Tmax, H, D]");
        OpContract.Shape(valueCache, keyCache.Shape, op, nameof(valueCache));
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), capacity = keyCache.Size(1);
        if (keyCache.Size(0) != batch || keyCache.Size(2) != heads || keyCache.Size(3) != headDim)
            throw new ArgumentException($"{op}: cache [{keyCache.ShapeText}] does not fit q [{q.ShapeText}] (need the same B, H, D)", nameof(keyCache));
        OpContract.DType(keyCache, q.DType, op, nameof(keyCache));
        OpContract.DType(valueCache, q.DType, op, nameof(valueCache));
        if (capacity < queryTime) throw new ArgumentException($"{op}: the caches' {capacity} rows cannot hold Tq = {queryTime} queries", nameof(keyCache));
        OpContract.Vector(keyTimes, batch, op, nameof(keyTimes));
        OpContract.DType(keyTimes, DType.I32, op, nameof(keyTimes));
        var shape = new AttentionShape(batch, queryTime, capacity, heads, headDim);
        return backend switch
        {
            CpuBackend cpu => CpuAttention.Cached(cpu, q, keyCache, valueCache, keyTimes, shape),
            CudaBackend cuda => AttentionKernels.Cached(cuda, q, keyCache, valueCache, keyTimes, shape),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        Tensor? dq = context.NewGradient(_q), dk = context.NewGradient(_k), dv = context.NewGradient(_v);
        Backward(dOutput, _q, _k, _v, Output, _logSumExp, dq, dk, dv);
        context.Deliver(_q, dq);
        context.Deliver(_k, dk);
        context.Deliver(_v, dv);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved() => _logSumExp.Dispose();

    private static AttentionShape CheckAttention(string op, Tensor q, Tensor k, Tensor v)
    {
        OpContract.OnBackend(q, q?.Backend!, op, nameof(q));
        OpContract.OnBackend(k, q!.Backend, op, nameof(k));
        OpContract.OnBackend(v, q.Backend, op, nameof(v));
        Info.RequireSupported(q, nameof(q));
        OpContract.Rank(q, 4, op, nameof(q), "[B, Tq, H, D]");
        OpContract.Rank(k, 4, op, nameof(k), "[B, Tk, H, D]");
        OpContract.Shape(v, k.Shape, op, nameof(v));
        OpContract.DType(k, q.DType, op, nameof(k));
        OpContract.DType(v, q.DType, op, nameof(v));
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), keyTime = k.Size(1);
        if (k.Size(0) != batch || k.Size(2) != heads || k.Size(3) != headDim || keyTime < queryTime)
            throw new ArgumentException($"{op}: k [{k.ShapeText}] does not fit q [{q.ShapeText}] (need the same B, H, D and Tk >= Tq)", nameof(k));
        return new AttentionShape(batch, queryTime, keyTime, heads, headDim);
    }
}

/// <summary>The dimensions of one attention call: B, Tq, Tk (Tmax for a cache), H, D.</summary>
internal readonly record struct AttentionShape(int Batch, int QueryTime, int KeyTime, int Heads, int HeadDim);
