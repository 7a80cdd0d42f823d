using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Loss;

/// <summary>
/// lm_head and the causal-LM loss in one op, in chunks of rows, so the [N, V] logits never exist whole: the mean
/// cross-entropy of x [N, C] W^T + b (W [V, C], b [V]) against host targets [N], over the rows whose target is not the
/// ignore index (0 when none counts). The loss's gradient with respect to a chunk's logits (softmax - onehot, times
/// 1 / counted) is known as soon as the chunk's logits are, so forward computes, per chunk: the logits (one GEMM, the
/// bias in its epilogue), the lse and target logit of each row and the gradient in place of the logits (one kernel),
/// then dX's rows (one GEMM) and, when W and b train, dW and db accumulated over the chunks in fixed chunk order
/// (two GEMMs). Backward only scales by the upstream scalar gradient, read on the device: dX (=) = dLoss dX_saved,
/// dW (+=) dLoss dW_saved, db likewise.
/// </summary>
/// <remarks>
/// <para>Numerics against LinearOp + CrossEntropyOp: the loss is the same bits (the same lse code and block, the same
/// double sum in row order, rounded once); the logits' gradient is the same bits when dLoss is 1. The unfused path
/// folds dLoss into the logits' gradient before rounding it (as torch does); here it multiplies dX, dW and db after
/// their GEMMs: one more fp32 rounding (bf16 for dX over bf16), exact when dLoss is a power of two (1 / accumulation
/// for 1, 2, 4, 8 micro-batches). dW and db are summed in fp32 chunk by chunk rather than in one GEMM over all rows.</para>
/// <para>Chunk rule (<see cref="RowsPerChunk"/>): at most <see cref="ChunkLogitBytes"/> of logits per chunk, the rows
/// split evenly over the fewest chunks that allows. Phi-2 at B 4, T 2048 in bf16: 8192 rows over 4 chunks of 2048 rows,
/// 210 MB of logits each, where the unfused path holds the 839 MB logits and then their 839 MB gradient.</para>
/// <para>Memory held from forward to backward: dX [N, C] and, when W and b train, dW [V, C] and db [V] in fp32 (the
/// parameter's dtype, which full training requires to be F32 or F64).</para>
/// </remarks>
internal sealed class LinearCrossEntropyOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in (x's, W's and b's; the loss is F32, F64 beside F64).</summary>
    public static BackendOp Info { get; } = new("LinearCrossEntropy", BackendOp.CpuFloats, [DType.F32, DType.BF16]);

    /// <summary>The most bytes of logits one chunk holds (256 MiB).</summary>
    public const long ChunkLogitBytes = 256L << 20;

    private readonly Tensor _x, _weight;
    private readonly Tensor? _bias;
    private Tensor? _dx, _dWeight, _dBias;

    private LinearCrossEntropyOp(Tensor x, Tensor weight, Tensor? bias, Gradients gradients) : base(x, weight, bias) =>
        (_x, _weight, _bias, _dx, _dWeight, _dBias) = (x, weight, bias, gradients.X, gradients.Weight, gradients.Bias);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The gradients forward computed, unscaled (dLoss = 1); each null when not wanted.</summary>
    internal readonly record struct Gradients(Tensor? X, Tensor? Weight, Tensor? Bias);

    /// <summary>
    /// Whether the fused op serves this head: a supported dtype, and a weight that either does not train or trains in a
    /// dtype the accumulation kernel takes (F32; F64 on the CPU). Otherwise the caller keeps LinearOp + CrossEntropyOp.
    /// </summary>
    public static bool CanServe(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!Info.Supports(x.Device.Kind, x.DType)) return false;
        bool trains = weight.RequiresGrad || bias is { RequiresGrad: true };
        return !trains || (weight.DType == x.DType && x.DType is DType.F32 or DType.F64);
    }

    /// <summary>
    /// The mean loss [1], recorded on the tape when one is open and an input requires a gradient: then forward also
    /// computes the gradients the tape will want. <paramref name="chunkRows"/> &gt; 0 overrides the chunk rule (tests).
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias, ReadOnlySpan<int> targets, int ignoreIndex = CrossEntropyOp.DefaultIgnoreIndex,
        int chunkRows = 0)
    {
        bool recording = GradientTape.Current is not null;
        var loss = Forward(x, weight, bias, targets, ignoreIndex, chunkRows,
            wantX: recording && x.RequiresGrad, wantWeight: recording && weight.RequiresGrad, wantBias: recording && bias is { RequiresGrad: true },
            out var gradients);
        return Record(new LinearCrossEntropyOp(x, weight, bias, gradients), loss);
    }

    /// <summary>
    /// The forward alone: the mean loss [1] and the gradients asked for, unscaled (as if dLoss were 1): dX like x,
    /// dW and db of W's dtype. With none asked for it is the loss only (evaluation).
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A target is outside [0, V) and is not the ignore index.</exception>
    /// <exception cref="NotSupportedException">The backend does not compute it in x's dtype.</exception>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, ReadOnlySpan<int> targets, int ignoreIndex, int chunkRows,
        bool wantX, bool wantWeight, bool wantBias, out Gradients gradients)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var (rows, inFeatures, vocab) = Check(x, weight, bias, targets, ignoreIndex);
        if ((wantWeight || wantBias) && !(weight.DType is DType.F32 or DType.F64))
            throw new ArgumentException($"LinearCrossEntropy: a training weight must be F32 or F64 (its gradient is accumulated in its dtype), got {weight.DType}", nameof(weight));
        int counted = 0;
        foreach (int t in targets) if (t != ignoreIndex) counted++;
        var shape = new Shape(rows, inFeatures, vocab, RowsPerChunk(rows, vocab, x.DType, chunkRows), counted, ignoreIndex);
        return x.Backend switch
        {
            CpuBackend cpu => CpuLinearCrossEntropy.Forward(cpu, x, weight, bias, targets, shape, wantX, wantWeight, wantBias, out gradients),
            CudaBackend cuda => LinearCrossEntropyKernels.Forward(cuda, x, weight, bias, targets, shape, wantX, wantWeight, wantBias, out gradients),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>What one forward works over: N, C, V, the rows of a chunk, the counted rows and the ignore index.</summary>
    internal readonly record struct Shape(int Rows, int In, int Vocab, int ChunkRows, int Counted, int IgnoreIndex)
    {
        /// <summary>1 / counted in fp32, as CrossEntropyOp's mean and gradient take it; 0 when nothing counts.</summary>
        public float InverseCount => Counted > 0 ? (float)(1.0 / Counted) : 0f;
    }

    /// <summary>
    /// Rows per chunk: <paramref name="chunkRows"/> when positive (at most N), else the fewest chunks whose logits stay
    /// within <see cref="ChunkLogitBytes"/>, with the rows split evenly over them (ceil(N / chunks)).
    /// </summary>
    public static int RowsPerChunk(int rows, int vocab, DType dtype, int chunkRows = 0)
    {
        if (rows == 0) return 0;
        if (chunkRows > 0) return Math.Min(chunkRows, rows);
        long most = Math.Max(1, ChunkLogitBytes / ((long)vocab * dtype.SizeInBytes()));
        long chunks = (rows + most - 1) / most;
        return (int)((rows + chunks - 1) / chunks);
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        OpContract.Count(dOutput, 1, "LinearCrossEntropyBackward", nameof(dOutput), "the loss's gradient");
        if (_dx is not null && _x.RequiresGrad)
        {
            // Scaled in place and handed over: the tape owns it from here.
            Scale(_dx, _dx, dOutput);
            var dx = _dx;
            _dx = null;
            context.Deliver(_x, dx);
        }
        if (_dWeight is not null && context.AccumulatorFor(_weight) is { } weightGradient) AccumulateScaled(_dWeight, weightGradient, dOutput);
        if (_dBias is not null && _bias is not null && context.AccumulatorFor(_bias) is { } biasGradient) AccumulateScaled(_dBias, biasGradient, dOutput);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved()
    {
        _dx?.Dispose();
        _dWeight?.Dispose();
        _dBias?.Dispose();
        (_dx, _dWeight, _dBias) = (null, null, null);
    }

    private static void Scale(Tensor value, Tensor output, Tensor factor)
    {
        switch (value.Backend)
        {
            case CpuBackend: CpuLinearCrossEntropy.Scale(value, output, factor); break;
            case CudaBackend cuda: LinearCrossEntropyKernels.Scale(cuda, value, output, factor); break;
            default: throw OpContract.NoImplementation(Info, value.Backend);
        }
    }

    private static void AccumulateScaled(Tensor value, Tensor accumulator, Tensor factor)
    {
        OpContract.Shape(accumulator, value.Shape, "LinearCrossEntropyBackward", nameof(accumulator));
        OpContract.DType(accumulator, value.DType, "LinearCrossEntropyBackward", nameof(accumulator));
        switch (value.Backend)
        {
            case CpuBackend: CpuLinearCrossEntropy.AccumulateScaled(value, accumulator, factor); break;
            case CudaBackend cuda: LinearCrossEntropyKernels.AccumulateScaled(cuda, value, accumulator, factor); break;
            default: throw OpContract.NoImplementation(Info, value.Backend);
        }
    }

    private static (int Rows, int In, int Vocab) Check(Tensor x, Tensor weight, Tensor? bias, ReadOnlySpan<int> targets, int ignoreIndex)
    {
        const string op = "LinearCrossEntropy";
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        OpContract.OnBackend(weight, x!.Backend, op, nameof(weight));
        OpContract.OnBackendIfAny(bias, x.Backend, op, nameof(bias));
        Info.RequireSupported(x, nameof(x));
        OpContract.Rank(x, 2, op, nameof(x), "[N, C]");
        OpContract.Rank(weight, 2, op, nameof(weight), "[V, C]");
        int rows = x.Size(0), inFeatures = x.Size(1), vocab = weight.Size(0);
        if (weight.Size(1) != inFeatures)
            throw new ArgumentException($"{op}: weight [{weight.ShapeText}] does not have x's {inFeatures} in-features", nameof(weight));
        if (vocab <= 0 || inFeatures <= 0) throw new ArgumentException($"{op}: weight [{weight.ShapeText}] is empty", nameof(weight));
        OpContract.DType(weight, x.DType, op, nameof(weight));
        if (bias is not null)
        {
            OpContract.Vector(bias, vocab, op, nameof(bias));
            OpContract.DType(bias, x.DType, op, nameof(bias));
        }
        if (targets.Length != rows)
            throw new ArgumentException($"{op}: {targets.Length} targets for x [{x.ShapeText}]: expected one per row, {rows}", nameof(targets));
        for (int r = 0; r < rows; r++)
            if (targets[r] != ignoreIndex && (uint)targets[r] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), targets[r],
                    $"targets[{r}] = {targets[r]} is outside [0, {vocab}) and is not the ignore index {ignoreIndex}.");
        return (rows, inFeatures, vocab);
    }
}
