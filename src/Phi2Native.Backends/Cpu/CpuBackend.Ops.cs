using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

// The differentiable ops: shape checks and dtype dispatch here; the math lives in the Cpu{Op} kernels.
public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public Tensor Rotary(Tensor x, int rotaryDim, double theta, int positionOffset)
    {
        RequireRank(x, 4, "Rotary input [B, T, H, D]");
        var y = Allocate(x.Shape, Compute(x).DType);
        if (x.DType == DType.F64)
            CpuRotary.Forward(Span<double>(x), Span<double>(y), x.Size(0), x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, positionOffset);
        else
            CpuRotary.Forward(Span<float>(x), Span<float>(y), x.Size(0), x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, positionOffset);
        return y;
    }

    /// <inheritdoc/>
    public void RotaryBackward(Tensor dOutput, Tensor dx, int rotaryDim, double theta, int positionOffset)
    {
        var s = dOutput.Shape;
        if (dOutput.DType == DType.F64)
            CpuRotary.Backward(Span<double>(dOutput), Span<double>(dx), s[0], s[1], s[2], s[3], rotaryDim, theta, positionOffset);
        else
            CpuRotary.Backward(Span<float>(dOutput), Span<float>(dx), s[0], s[1], s[2], s[3], rotaryDim, theta, positionOffset);
    }

    /// <inheritdoc/>
    public Tensor Attention(Tensor q, Tensor k, Tensor v, out Tensor logSumExp)
    {
        RequireRank(q, 4, "Attention q [B, Tq, H, D]");
        RequireRank(k, 4, "Attention k [B, Tk, H, D]");
        RequireSameShape(k, v, "Attention k and v");
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), keyTime = k.Size(1);
        if (k.Size(0) != batch || k.Size(2) != heads || k.Size(3) != headDim || keyTime < queryTime)
            throw new ArgumentException($"Attention: k [{k.ShapeText}] does not fit q [{q.ShapeText}] (need the same B, H, D and Tk >= Tq)");
        var output = Allocate(q.Shape, Compute(q).DType);
        logSumExp = Allocate([batch, heads, queryTime], q.DType);
        if (q.DType == DType.F64)
            CpuAttention.Forward(Span<double>(q), Span<double>(k), Span<double>(v), Span<double>(output), Span<double>(logSumExp), batch, queryTime, keyTime, heads, headDim);
        else
            CpuAttention.Forward(Span<float>(q), Span<float>(k), Span<float>(v), Span<float>(output), Span<float>(logSumExp), batch, queryTime, keyTime, heads, headDim);
        return output;
    }

    /// <inheritdoc/>
    public void AttentionBackward(Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), keyTime = k.Size(1);
        if (q.DType == DType.F64)
            CpuAttention.Backward(Span<double>(dOutput), Span<double>(q), Span<double>(k), Span<double>(v), Span<double>(output), Span<double>(logSumExp),
                Optional<double>(dq), Optional<double>(dk), Optional<double>(dv), batch, queryTime, keyTime, heads, headDim);
        else
            CpuAttention.Backward(Span<float>(dOutput), Span<float>(q), Span<float>(k), Span<float>(v), Span<float>(output), Span<float>(logSumExp),
                Optional<float>(dq), Optional<float>(dk), Optional<float>(dv), batch, queryTime, keyTime, heads, headDim);
    }

    /// <inheritdoc/>
    public Tensor Dropout(Tensor x, double p, ulong seed)
    {
        var y = Allocate(x.Shape, Compute(x).DType);
        if (x.DType == DType.F64) CpuDropout.Forward<double>(Span<double>(x), Span<double>(y), p, seed);
        else CpuDropout.Forward<float>(Span<float>(x), Span<float>(y), p, seed);
        return y;
    }

    /// <inheritdoc/>
    public void DropoutBackward(Tensor dOutput, Tensor dx, double p, ulong seed)
    {
        if (dx.DType == DType.F64) CpuDropout.Backward<double>(Span<double>(dOutput), Span<double>(dx), p, seed);
        else CpuDropout.Backward<float>(Span<float>(dOutput), Span<float>(dx), p, seed);
    }

    /// <inheritdoc/>
    public void AdamWStep(Tensor parameter, Tensor gradient, Tensor firstMoment, Tensor secondMoment, in AdamWStepArguments arguments)
    {
        foreach (var (tensor, what) in new[] { (gradient, "gradient"), (firstMoment, "first moment"), (secondMoment, "second moment") })
        {
            if (tensor.ElementCount != parameter.ElementCount || tensor.DType != parameter.DType)
                throw new ArgumentException($"AdamWStep: {what} [{tensor.ShapeText}] {tensor.DType} does not match parameter {parameter}");
        }
        if (Compute(parameter).DType == DType.F64)
            CpuAdamW.Step(Span<double>(parameter), Span<double>(gradient), Span<double>(firstMoment), Span<double>(secondMoment), arguments);
        else
            CpuAdamW.Step(Span<float>(parameter), Span<float>(gradient), Span<float>(firstMoment), Span<float>(secondMoment), arguments);
    }

    internal static Span<T> Optional<T>(Tensor? tensor) where T : unmanaged => tensor is null ? default : Span<T>(tensor);

    private static void RequireRank(Tensor tensor, int rank, string what)
    {
        if (tensor.Rank != rank) throw new ArgumentException($"{what}: expected rank {rank}, got [{tensor.ShapeText}]");
    }

    private static void RequireVector(Tensor tensor, int length, string what)
    {
        if (tensor.Rank != 1 || tensor.Size(0) != length) throw new ArgumentException($"{what}: expected [{length}], got [{tensor.ShapeText}]");
    }

    private static void RequireIds(Tensor ids, string what)
    {
        if (ids.DType != DType.I32) throw new ArgumentException($"{what}: expected I32 ids, got {ids.DType}");
    }
}
