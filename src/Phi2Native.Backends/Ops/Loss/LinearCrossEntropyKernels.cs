using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Loss;

/// <summary>
/// <see cref="LinearCrossEntropyOp"/> on the CUDA backend. Per chunk of n rows, in row-major terms (CudaLinear's
/// comment gives the column-major reading): logits [n, V] = x[r0..] W^T + b (cublasLtMatmul, BIAS epilogue);
/// cross_entropy_chunk (lse, the target logits, the gradient in place); dX[r0..] = dlogits W (GemmEx, =);
/// dW += dlogits^T x[r0..] and db += dlogits^T ones (GemmEx, +=, fp32), when they train. Then cross_entropy_picked_sum
/// once. One [chunk, V] buffer serves every chunk; nothing is read back (the count is the host's).
/// </summary>
internal static class LinearCrossEntropyKernels
{
    /// <summary><see cref="LinearCrossEntropyOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    public static Tensor Forward(CudaBackend cuda, Tensor x, Tensor weight, Tensor? bias, ReadOnlySpan<int> targets, LinearCrossEntropyOp.Shape shape,
        bool wantX, bool wantWeight, bool wantBias, out LinearCrossEntropyOp.Gradients gradients)
    {
        var (rows, inFeatures, vocab, chunkRows, counted, ignore) = shape;
        var dtype = x.DType;
        var (device, stream, blas) = (cuda.DeviceApi, cuda.Stream, cuda.DeviceApi.Blas);
        var loss = cuda.Allocate([1], DType.F32, "loss");
        var dx = wantX ? cuda.Allocate(x.Shape, dtype, "dx") : null;
        var dWeight = wantWeight ? cuda.Zeros(weight.Shape, weight.DType) : null;
        var dBias = wantBias ? cuda.Zeros([vocab], weight.DType) : null;
        gradients = new(dx, dWeight, dBias);
        using var counts = cuda.Allocate([1], DType.I32, "counted");
        using var sum = cuda.Allocate([1], DType.F32, "loss sum");
        if (rows == 0)
        {
            device.Fill(cuda.Pointer(loss, "loss"), 0, sizeof(float), stream);
            return loss;
        }
        using var targetTensor = cuda.FromBytes(MemoryMarshal.AsBytes(targets), DType.I32, [rows], DType.I32);
        using var lse = cuda.Allocate([rows], DType.F32, "lse");
        using var picked = cuda.Allocate([rows], DType.F32, "picked");
        using var logits = cuda.Allocate([chunkRows, vocab], dtype, "logits");
        var (px, pw, pLogits) = (cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)), cuda.Pointer(logits, "logits"));
        var (pt, pLse, pPicked) = (cuda.Pointer(targetTensor, nameof(targets)), cuda.Pointer(lse, "lse"), cuda.Pointer(picked, "picked"));
        var pdx = cuda.OptionalPointer(dx, "dx");
        long size = dtype.SizeInBytes();
        for (int start = 0; start < rows; start += chunkRows)
        {
            int n = Math.Min(chunkRows, rows - start);
            var xChunk = px.Offset(start * inFeatures * size);
            var projection = CudaLinear.Projection(xChunk, pw, pLogits, dtype, n, inFeatures, vocab);
            blas.LtMatmul(bias is null ? projection : projection with { Epilogue = LtEpilogue.Bias, Bias = cuda.Pointer(bias, nameof(bias)), BiasType = dtype },
                stream);
            CrossEntropyKernels.CrossEntropyChunk(device, dtype, pLogits, pt.Offset(start * sizeof(int)), pLse.Offset(start * sizeof(float)),
                pPicked.Offset(start * sizeof(float)), counted, n, vocab, ignore, stream);
            if (dx is not null)
                blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, inFeatures, n, vocab,
                    1f, pw, dtype, inFeatures, pLogits, dtype, vocab, 0f, pdx.Offset(start * inFeatures * size), dtype, inFeatures, stream);
            if (dWeight is not null)
                blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.Transpose, inFeatures, vocab, n,
                    1f, xChunk, dtype, inFeatures, pLogits, dtype, vocab, 1f, cuda.Pointer(dWeight, "dWeight"), dWeight.DType, inFeatures, stream);
            if (dBias is not null)
                blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, vocab, 1, n,
                    1f, pLogits, dtype, vocab, cuda.Ones(dtype, n), dtype, n, 1f, cuda.Pointer(dBias, "dBias"), dBias.DType, vocab, stream);
        }
        CrossEntropyKernels.CrossEntropyPickedSum(device, pPicked, pt, pLse, cuda.Pointer(sum, "loss sum"), cuda.Pointer(loss, "loss"),
            cuda.Pointer(counts, "counted"), rows, vocab, ignore, stream);
        return loss;
    }

    /// <summary>output = value * factor[0], factor read on the device (elementwise.cu's scale_by).</summary>
    public static void Scale(CudaBackend cuda, Tensor value, Tensor output, Tensor factor)
    {
        if (value.ElementCount == 0) return;
        ElementwiseKernels.ScaleBy(cuda.DeviceApi, value.DType, cuda.Pointer(value, nameof(value)), cuda.Pointer(output, nameof(output)),
            cuda.Pointer(factor, nameof(factor)), value.ElementCount, cuda.Stream);
    }

    /// <summary>accumulator += value * factor[0], factor read on the device (elementwise.cu's accumulate_scaled_f32).</summary>
    public static void AccumulateScaled(CudaBackend cuda, Tensor value, Tensor accumulator, Tensor factor)
    {
        if (value.ElementCount == 0) return;
        ElementwiseKernels.AccumulateScaled(cuda.DeviceApi, value.DType, cuda.Pointer(value, nameof(value)), cuda.Pointer(accumulator, nameof(accumulator)),
            cuda.Pointer(factor, nameof(factor)), value.ElementCount, cuda.Stream);
    }
}
