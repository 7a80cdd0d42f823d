using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Projection;

// Linear through cuBLAS(Lt). Row-major tensors against column-major BLAS: a row-major [R, C] matrix with leading
// dimension C is, read column-major, its transpose [C, R] with the same leading dimension. So every product below is
// written for the transposes, with N rows, in = in-features, out = out-features:
//
//   forward   y [N, out] = x [N, in] W^T + b      column-major: y^T [out, N] = W [out, in] x^T [in, N] (+ b per row of y^T)
//             A = W stored col-major [in, out] (ld in), op T -> [out, in];  B = x^T [in, N] (ld in), op N;  m = out, n = N, k = in
//   dx        dx [N, in] = dY [N, out] W          column-major: dx^T [in, N] = W^T [in, out] dY^T [out, N]
//             A = W^T [in, out] (ld in), op N;  B = dY^T [out, N] (ld out), op N;  m = in, n = N, k = out;  beta 0 (=),
//             or beta 1 (+=) into a gradient already pending for x (BackwardContext.PendingGradient); where x is fc1's
//             gelu_new output, cuBLASLt with the DGELU epilogue instead (aux = fc1's pre-activation h [N, in], ld in):
//             dx = (dY W (+ dx)) gelu_new'(h), h's gradient (GeluGradientFusion)
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
internal static class CudaLinear
{
    /// <summary><see cref="LinearOp.Forward"/> on the CUDA backend, the contract checked: x, weight and bias share a dtype; fp32 accumulation.</summary>
    public static Tensor Forward(CudaBackend cuda, Tensor x, Tensor weight, Tensor? bias, int rows, int inFeatures, int outFeatures)
    {
        var y = cuda.Allocate([.. x.Shape[..^1], outFeatures], x.DType, nameof(x));
        if (rows == 0 || outFeatures == 0) return y;
        if (inFeatures == 0)
        {
            y.Dispose();
            throw new NotSupportedException("Linear: a weight with 0 in-features is not supported on the CUDA backend (cuBLASLt needs k >= 1)");
        }
        var (px, pw, py) = (cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)), cuda.Pointer(y, "y"));
        var dtype = x.DType;
        var blas = cuda.DeviceApi.Blas;
        if (bias == null)
        {
            blas.GemmEx(BlasOperation.Transpose, BlasOperation.NoTranspose, outFeatures, rows, inFeatures,
                1f, pw, dtype, inFeatures, px, dtype, inFeatures, 0f, py, dtype, outFeatures, cuda.Stream);
            return y;
        }
        blas.LtMatmul(Projection(px, pw, py, dtype, rows, inFeatures, outFeatures) with
        {
            Epilogue = LtEpilogue.Bias, Bias = cuda.Pointer(bias, nameof(bias)), BiasType = dtype,
        }, cuda.Stream);
        return y;
    }

    /// <summary>
    /// <see cref="LinearOp.ForwardAdding"/> on the CUDA backend, the contract checked: one cuBLASLt call, D = x W^T + C + b
    /// with C the residual (beta 1) and D a new tensor or, in place, the residual itself (C = D, the same layout).
    /// </summary>
    public static Tensor ForwardAdding(CudaBackend cuda, Tensor x, Tensor weight, Tensor? bias, Tensor residual, bool inPlace, int rows, int inFeatures, int outFeatures)
    {
        var y = inPlace ? residual : cuda.Allocate(residual.Shape, residual.DType, nameof(residual));
        if (rows == 0 || outFeatures == 0) return y;
        if (inFeatures == 0)
        {
            if (!inPlace) y.Dispose();
            throw new NotSupportedException("Linear: a weight with 0 in-features is not supported on the CUDA backend (cuBLASLt needs k >= 1)");
        }
        var dtype = x.DType;
        cuda.DeviceApi.Blas.LtMatmul(Projection(cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)), cuda.Pointer(y, "y"), dtype, rows, inFeatures, outFeatures) with
        {
            Beta = 1f, C = cuda.Pointer(residual, nameof(residual)), Ldc = outFeatures,
            Epilogue = bias is null ? LtEpilogue.Default : LtEpilogue.Bias, Bias = cuda.OptionalPointer(bias, nameof(bias)), BiasType = dtype,
        }, cuda.Stream);
        return y;
    }

    /// <summary>
    /// cuBLASLt's arguments for y [rows, out] = x [rows, in] W^T with W [out, in], all of <paramref name="dtype"/>
    /// (row-major tensors as cuBLAS's column-major: y^T = W x^T); the caller adds the epilogue.
    /// </summary>
    internal static LtMatmulArguments Projection(DevicePtr x, DevicePtr weight, DevicePtr y, DType dtype, int rows, int inFeatures, int outFeatures) => new()
    {
        TransposeA = BlasOperation.Transpose,
        TransposeB = BlasOperation.NoTranspose,
        M = outFeatures, N = rows, K = inFeatures,
        A = weight, AType = dtype, Lda = inFeatures,
        B = x, BType = dtype, Ldb = inFeatures,
        D = y, DType = dtype, Ldd = outFeatures,
    };

    /// <summary>
    /// <see cref="LinearOp"/>'s backward on the CUDA backend, the contract checked: each product accumulates in fp32 and
    /// rounds once into its output (dWeight and dBias of x's dtype or F32). <paramref name="accumulateDx"/>: dx += dY W
    /// (beta 1: dx read, the sum rounded once) instead of dx = dY W. <paramref name="geluPreActivation"/>: the dx product
    /// is one cublasLtMatmul with the DGELU epilogue (aux = h [N, in], ld in), dx = (dY W (+ dx)) gelu_new'(h), written
    /// over dx in place (C = D).
    /// </summary>
    public static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias,
        int rows, int inFeatures, int outFeatures, bool accumulateDx = false, Tensor? geluPreActivation = null)
    {
        var (pdy, px, pw) = (cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)));
        var dtype = x.DType;
        var blas = cuda.DeviceApi.Blas;
        var stream = cuda.Stream;
        if (dx != null && rows > 0 && inFeatures > 0 && geluPreActivation != null)
        {
            var pdx = cuda.Pointer(dx, nameof(dx));
            blas.LtMatmul(new LtMatmulArguments
            {
                TransposeA = BlasOperation.NoTranspose, TransposeB = BlasOperation.NoTranspose, M = inFeatures, N = rows, K = outFeatures,
                A = pw, AType = dtype, Lda = inFeatures, B = pdy, BType = dtype, Ldb = outFeatures,
                Beta = accumulateDx ? 1f : 0f, C = accumulateDx ? pdx : DevicePtr.Null, Ldc = inFeatures, D = pdx, DType = dtype, Ldd = inFeatures,
                Epilogue = LtEpilogue.DGelu, Aux = cuda.Pointer(geluPreActivation, nameof(geluPreActivation)), AuxLd = inFeatures,
            }, stream);
        }
        else if (dx != null && rows > 0 && inFeatures > 0)
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, inFeatures, rows, outFeatures,
                1f, pw, dtype, inFeatures, pdy, dtype, outFeatures, accumulateDx ? 1f : 0f, cuda.Pointer(dx, nameof(dx)), dtype, inFeatures, stream);
        // With no rows the parameter gradients gain nothing: skip rather than hand cuBLAS k = 0.
        if (rows == 0 || outFeatures == 0) return;
        if (dWeight != null && inFeatures > 0)
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.Transpose, inFeatures, outFeatures, rows,
                1f, px, dtype, inFeatures, pdy, dtype, outFeatures, 1f, cuda.Pointer(dWeight, nameof(dWeight)), dWeight.DType, inFeatures, stream);
        if (dBias != null)
            blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, outFeatures, 1, rows,
                1f, pdy, dtype, outFeatures, cuda.Ones(dtype, rows), dtype, rows, 1f, cuda.Pointer(dBias, nameof(dBias)), dBias.DType, outFeatures, stream);
    }
}
