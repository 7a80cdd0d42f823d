// LinearCrossEntropyOp on the CPU backend, the reference of its kernels: per chunk of rows r0 .. r0 + n,
//   logits [n, V] = x[r0..] W^T + b                              CpuGemm, then b added to each row (CpuLinear's order)
//   lse, then the terms lse - logit[target] added in double      CpuCrossEntropy's lse; the sum in row order across chunks
//   logits <- (softmax - onehot) / counted, in place              CpuCrossEntropy.Backward with scale (float)(1 / counted)
//   dX[r0..] = dlogits W;  dW += dlogits^T x[r0..];  db += column sums of dlogits
// One [chunk, V] buffer serves every chunk. The loss is CrossEntropyOp's: the double sum rounded once, times (float)(1 / counted).
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Loss;

internal static class CpuLinearCrossEntropy
{
    /// <summary><see cref="LinearCrossEntropyOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, Tensor weight, Tensor? bias, ReadOnlySpan<int> targets, LinearCrossEntropyOp.Shape shape,
        bool wantX, bool wantWeight, bool wantBias, out LinearCrossEntropyOp.Gradients gradients)
    {
        var loss = cpu.Allocate([1], x.DType);
        var dx = wantX ? cpu.Allocate(x.Shape, x.DType) : null;
        var dWeight = wantWeight ? cpu.Zeros(weight.Shape, weight.DType) : null;
        var dBias = wantBias ? cpu.Zeros([shape.Vocab], weight.DType) : null;
        gradients = new(dx, dWeight, dBias);
        if (x.DType == DType.F64)
            CpuBackend.Span<double>(loss)[0] = Run<double>(x, weight, bias, targets, shape, dx, dWeight, dBias);
        else
            CpuBackend.Span<float>(loss)[0] = (float)Run<float>(x, weight, bias, targets, shape, dx, dWeight, dBias);
        return loss;
    }

    /// <summary>output = value * factor[0] (the backward's dX).</summary>
    public static void Scale(Tensor value, Tensor output, Tensor factor)
    {
        if (value.DType == DType.F64) TensorPrimitives.Multiply(CpuBackend.Span<double>(value), Factor<double>(factor), CpuBackend.Span<double>(output));
        else TensorPrimitives.Multiply(CpuBackend.Span<float>(value), Factor<float>(factor), CpuBackend.Span<float>(output));
    }

    /// <summary>accumulator += value * factor[0], rounded after the product and after the sum (the backward's dW, db).</summary>
    public static void AccumulateScaled(Tensor value, Tensor accumulator, Tensor factor)
    {
        if (value.DType == DType.F64) AccumulateScaled(CpuBackend.Span<double>(value), CpuBackend.Span<double>(accumulator), Factor<double>(factor));
        else AccumulateScaled(CpuBackend.Span<float>(value), CpuBackend.Span<float>(accumulator), Factor<float>(factor));
    }

    private static void AccumulateScaled<T>(ReadOnlySpan<T> value, Span<T> accumulator, T factor) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < value.Length; i++) accumulator[i] += factor * value[i];
    }

    // The loss's scalar gradient: F32 beside F32 (and 16-bit) values, F64 beside F64.
    private static T Factor<T>(Tensor factor) where T : unmanaged, IFloatingPointIeee754<T> =>
        factor.DType == DType.F64 ? T.CreateChecked(CpuBackend.Span<double>(factor)[0]) : T.CreateChecked(CpuBackend.Span<float>(factor)[0]);

    // Returns the mean loss, formed as CrossEntropyOp forms it for this T.
    private static double Run<T>(Tensor x, Tensor weight, Tensor? bias, ReadOnlySpan<int> targets, LinearCrossEntropyOp.Shape shape,
        Tensor? dx, Tensor? dWeight, Tensor? dBias) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (rows, inFeatures, vocab, chunkRows, counted, ignore) = shape;
        if (rows == 0) return 0;
        ReadOnlySpan<T> xs = CpuBackend.Span<T>(x), w = CpuBackend.Span<T>(weight), b = CpuBackend.Optional<T>(bias);
        Span<T> dxs = CpuBackend.Optional<T>(dx), dw = CpuBackend.Optional<T>(dWeight), db = CpuBackend.Optional<T>(dBias);
        bool backward = dx is not null || dWeight is not null || dBias is not null;
        var lse = new T[chunkRows];
        var buffer = new T[(long)chunkRows * vocab];
        double sum = 0;
        for (int start = 0; start < rows; start += chunkRows)
        {
            int n = Math.Min(chunkRows, rows - start);
            Span<T> logits = buffer.AsSpan(0, n * vocab);
            ReadOnlySpan<T> xChunk = xs.Slice(start * inFeatures, n * inFeatures);
            ReadOnlySpan<int> chunkTargets = targets.Slice(start, n);
            CpuGemm.Gemm(false, true, n, vocab, inFeatures, xChunk, inFeatures, w, inFeatures, false, logits, vocab);
            if (!b.IsEmpty)
                for (int r = 0; r < n; r++) TensorPrimitives.Add(logits.Slice(r * vocab, vocab), b, logits.Slice(r * vocab, vocab));
            CpuCrossEntropy.Forward<T>(logits, chunkTargets, lse.AsSpan(0, n), n, vocab, ignore);
            for (int r = 0; r < n; r++)
                if (chunkTargets[r] != ignore) sum += double.CreateChecked(lse[r]) - double.CreateChecked(logits[r * vocab + chunkTargets[r]]);
            if (!backward) continue;
            CpuCrossEntropy.Backward<T>(logits, chunkTargets, lse.AsSpan(0, n), typeof(T) == typeof(double) ? (counted > 0 ? 1.0 / counted : 0) : shape.InverseCount,
                logits, n, vocab, ignore);
            if (!dxs.IsEmpty) CpuGemm.Gemm(false, false, n, inFeatures, vocab, logits, vocab, w, inFeatures, false, dxs.Slice(start * inFeatures, n * inFeatures), inFeatures);
            if (!dw.IsEmpty) CpuGemm.Gemm(true, false, vocab, inFeatures, n, logits, vocab, xChunk, inFeatures, true, dw, inFeatures);
            if (!db.IsEmpty)
                for (int r = 0; r < n; r++) TensorPrimitives.Add(db, logits.Slice(r * vocab, vocab), db);
        }
        if (typeof(T) == typeof(double)) return counted > 0 ? sum * (1.0 / counted) : sum;
        return counted > 0 ? (float)sum * shape.InverseCount : (float)sum;
    }
}
