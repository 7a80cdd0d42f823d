using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// Linear through cuBLAS(Lt). Row-major tensors against column-major BLAS: a row-major [R, C] matrix with leading
// dimension C is, read column-major, its transpose [C, R] with the same leading dimension. So every product below is
// written for the transposes, with N rows, in = in-features, out = out-features:
//
//   forward   y [N, out] = x [N, in] W^T + b      column-major: y^T [out, N] = W [out, in] x^T [in, N] (+ b per row of y^T)
//             A = W stored col-major [in, out] (ld in), op T -> [out, in];  B = x^T [in, N] (ld in), op N;  m = out, n = N, k = in
//   dx        dx [N, in] = dY [N, out] W          column-major: dx^T [in, N] = W^T [in, out] dY^T [out, N]
//             A = W^T [in, out] (ld in), op N;  B = dY^T [out, N] (ld out), op N;  m = in, n = N, k = out;  beta 0 (=)
//   dW        dW [out, in] += dY^T x              column-major: dW^T [in, out] += x^T [in, N] dY [N, out]
//             A = x^T [in, N] (ld in), op N;  B = dY^T [out, N] (ld out), op T -> [N, out];  m = in, n = out, k = N;  beta 1 (+=)
//   dBias     dBias [out] += column sums of dY    column-major: dBias [out, 1] += dY^T [out, N] ones [N, 1];  beta 1 (+=)
//
// The bias gradient is a GEMM against a ones vector rather than cuBLASLt's BGRADB epilogue or a reduction kernel: it
// accumulates (beta = 1) straight into dBias as the contract asks, where BGRADB writes (=) and would need a scratch
// vector and an add, and where BGRADB's alpha scaling is still unconfirmed on a GPU (LtMatmulArguments); it takes
// F32 and BF16 alike with fp32 accumulation; and reduce.cu's row_sum would need dY transposed first.
// Forward's bias goes in cuBLASLt's BIAS epilogue (one element per row of y^T, broadcast along its columns: exactly
// b added to every row of y), so y is written once.
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    /// <remarks>x, weight and bias share a dtype (F32, BF16 or F16); the product accumulates in fp32 and y has x's dtype.</remarks>
    public Tensor Linear(Tensor x, Tensor weight, Tensor? bias)
    {
        var px = Pointer(x, nameof(x));
        var pw = Pointer(weight, nameof(weight));
        var pb = OptionalPointer(bias, nameof(bias));
        RequireRank(weight, 2, "Linear weight [out, in]");
        int outFeatures = weight.Size(0), inFeatures = weight.Size(1);
        if (x.Rank == 0 || x.Size(-1) != inFeatures)
            throw new ArgumentException($"Linear: input [{x.ShapeText}] does not end in {inFeatures}, the weight's in-features", nameof(x));
        if (bias != null) RequireVector(bias, outFeatures, "Linear bias");
        RequireDType(x, nameof(Linear), nameof(x), DType.F32, DType.BF16, DType.F16);
        RequireSameDType(weight, x.DType, nameof(Linear), nameof(weight));
        if (bias != null) RequireSameDType(bias, x.DType, nameof(Linear), nameof(bias));
        int rows = Int(x.ElementCount / Math.Max(inFeatures, 1), "Linear rows");
        var y = Allocate([.. x.Shape[..^1], outFeatures], x.DType, nameof(x));
        if (rows == 0 || outFeatures == 0) return y;
        if (inFeatures == 0)
        {
            y.Dispose();
            throw new NotSupportedException("Linear: a weight with 0 in-features is not supported on the CUDA backend (cuBLASLt needs k >= 1)");
        }
        var py = Pointer(y, "y");
        var dtype = x.DType;
        if (bias == null)
        {
            _device.Blas.GemmEx(BlasOperation.Transpose, BlasOperation.NoTranspose, outFeatures, rows, inFeatures,
                1f, pw, dtype, inFeatures, px, dtype, inFeatures, 0f, py, dtype, outFeatures, _stream);
            return y;
        }
        _device.Blas.LtMatmul(new LtMatmulArguments
        {
            TransposeA = BlasOperation.Transpose,
            TransposeB = BlasOperation.NoTranspose,
            M = outFeatures, N = rows, K = inFeatures,
            A = pw, AType = dtype, Lda = inFeatures,
            B = px, BType = dtype, Ldb = inFeatures,
            D = py, DType = dtype, Ldd = outFeatures,
            Epilogue = LtEpilogue.Bias, Bias = pb, BiasType = dtype,
        }, _stream);
        return y;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// dOutput, x and weight share a dtype; dx has it too; dWeight and dBias have it or are F32 (fp32 gradients of a
    /// BF16 layer). Each product accumulates in fp32 and rounds once into its output.
    /// </remarks>
    public void LinearBackward(Tensor dOutput, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        var pdy = Pointer(dOutput, nameof(dOutput));
        var px = Pointer(x, nameof(x));
        var pw = Pointer(weight, nameof(weight));
        var pdx = OptionalPointer(dx, nameof(dx));
        var pdw = OptionalPointer(dWeight, nameof(dWeight));
        var pdb = OptionalPointer(dBias, nameof(dBias));
        RequireRank(weight, 2, "LinearBackward weight [out, in]");
        int outFeatures = weight.Size(0), inFeatures = weight.Size(1);
        if (x.Rank == 0 || x.Size(-1) != inFeatures)
            throw new ArgumentException($"LinearBackward: input [{x.ShapeText}] does not end in {inFeatures}, the weight's in-features", nameof(x));
        int rows = Int(x.ElementCount / Math.Max(inFeatures, 1), "Linear rows");
        RequireCount(dOutput, (long)rows * outFeatures, $"LinearBackward dOutput [{rows}, {outFeatures}]");
        if (dx != null) RequireCount(dx, x.ElementCount, $"LinearBackward dx (like x [{x.ShapeText}])");
        if (dWeight != null) RequireShape(dWeight, weight.Shape, "LinearBackward dWeight");
        if (dBias != null) RequireVector(dBias, outFeatures, "LinearBackward dBias");
        var dtype = x.DType;
        RequireDType(x, nameof(LinearBackward), nameof(x), DType.F32, DType.BF16, DType.F16);
        RequireSameDType(weight, dtype, nameof(LinearBackward), nameof(weight));
        RequireSameDType(dOutput, dtype, nameof(LinearBackward), nameof(dOutput));
        if (dx != null) RequireSameDType(dx, dtype, nameof(LinearBackward), nameof(dx));
        if (dWeight != null) RequireAccumulatorDType(dWeight, dtype, nameof(dWeight));
        if (dBias != null) RequireAccumulatorDType(dBias, dtype, nameof(dBias));

        var blas = _device.Blas;
        if (dx != null && rows > 0 && inFeatures > 0)
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, inFeatures, rows, outFeatures,
                1f, pw, dtype, inFeatures, pdy, dtype, outFeatures, 0f, pdx, dtype, inFeatures, _stream);
        // With no rows the parameter gradients gain nothing: skip rather than hand cuBLAS k = 0.
        if (rows == 0 || outFeatures == 0) return;
        if (dWeight != null && inFeatures > 0)
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.Transpose, inFeatures, outFeatures, rows,
                1f, px, dtype, inFeatures, pdy, dtype, outFeatures, 1f, pdw, dWeight.DType, inFeatures, _stream);
        if (dBias != null)
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, outFeatures, 1, rows,
                1f, pdy, dtype, outFeatures, Ones(dtype, rows), dtype, rows, 1f, pdb, dBias.DType, outFeatures, _stream);
    }

    /// <summary>A parameter gradient is of the compute dtype or F32 (cuBLAS's output types for fp32 accumulation).</summary>
    private static void RequireAccumulatorDType(Tensor gradient, DType dtype, string argument)
    {
        if (gradient.DType != dtype && gradient.DType != DType.F32)
            throw new ArgumentException($"LinearBackward: {argument} is {gradient.DType}; it must be {dtype} (the inputs' dtype) or F32", argument);
    }
}
