using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Mlp;

// LinearGeluOp on the CUDA backend, in CudaLinear's column-major terms (N rows, in, out; y^T [out, N] = W [out, in] x^T):
//
//   forward, fused    one cublasLtMatmul: GELU_AUX_BIAS (h = P + b saved as aux [out, N], ld out; y = gelu(h)) when the
//                     pre-activation is wanted, GELU_BIAS (nothing saved) at inference. Taken only where the device's
//                     IBlas.GeluEpilogueIsGeluNew says cuBLASLt's GELU is gelu_new (true on the emulator; on a GPU as
//                     the probe CudaBackend.OpenGpu runs says, GeluEpilogueProbe), and, with aux, out a multiple of 8 (cuBLASLt's aux ld rule).
//   forward, fallback cublasLtMatmul with the BIAS epilogue writes h (rounded once) into pre (into y at inference),
//                     then gelu.cu's gelu_new, 16-byte vectors, y = gelu_new(h): two launches, 3 [N, out] passes, as
//                     the unfused Linear + GeluNew. gelu.cu's bias_gelu_new (GEMM without bias, then bias + gelu_new)
//                     would round h twice and move 4 passes: its header says why it is not used here.
//   backward          gelu.cu's bias_gelu_new_backward: dh = dY * gelu_new'(pre) and dBias += column sums of dh (fp32, a
//                     fixed order) in one pass; then CudaLinear's dx and dW GEMMs from dh. A 16-bit dBias (not F32)
//                     takes CudaLinear's ones-vector GEMM instead of the kernel's fp32 sums. Where fc2's dx product
//                     already took gelu_new's backward in its DGELU epilogue (GeluGradientFusion), dY is dh: only
//                     CudaLinear's products run (dBias by its ones-vector GEMM).
internal static class LinearGeluKernels
{
    /// <summary><see cref="LinearGeluOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    public static (Tensor Y, Tensor? Pre) Forward(CudaBackend cuda, Tensor x, Tensor weight, Tensor bias, int rows, int inFeatures, int outFeatures, bool savePre)
    {
        var y = cuda.Allocate([.. x.Shape[..^1], outFeatures], x.DType, nameof(x));
        var pre = savePre ? cuda.Allocate([.. x.Shape[..^1], outFeatures], x.DType, nameof(x)) : null;
        if (rows == 0 || outFeatures == 0) return (y, pre);
        if (inFeatures == 0)
        {
            y.Dispose();
            pre?.Dispose();
            throw new NotSupportedException("LinearGelu: a weight with 0 in-features is not supported on the CUDA backend (cuBLASLt needs k >= 1)");
        }
        var (px, pw, pb, py) = (cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)), cuda.Pointer(bias, nameof(bias)), cuda.Pointer(y, "y"));
        var ppre = pre is null ? DevicePtr.Null : cuda.Pointer(pre, "pre");
        var dtype = x.DType;
        var blas = cuda.DeviceApi.Blas;
        if (UsesGeluEpilogue(blas, outFeatures, savePre))
        {
            blas.LtMatmul(CudaLinear.Projection(px, pw, py, dtype, rows, inFeatures, outFeatures) with
            {
                Epilogue = savePre ? LtEpilogue.GeluAuxBias : LtEpilogue.GeluBias, Bias = pb, BiasType = dtype,
                Aux = ppre, AuxLd = savePre ? outFeatures : 0,
            }, cuda.Stream);
            return (y, pre);
        }
        // The fallback: h = x W^T + b through CudaLinear's BIAS epilogue (rounded once, exactly what an unfused Linear
        // stores), into pre (or into y at inference), then gelu_new over it, vectorised, in place at inference.
        var ph = savePre ? ppre : py;
        blas.LtMatmul(CudaLinear.Projection(px, pw, ph, dtype, rows, inFeatures, outFeatures) with
        {
            Epilogue = LtEpilogue.Bias, Bias = pb, BiasType = dtype,
        }, cuda.Stream);
        GeluKernels.GeluNew(cuda.DeviceApi, dtype, ph, py, (long)rows * outFeatures, cuda.Stream);
        return (y, pre);
    }

    /// <summary>
    /// Whether forward takes cuBLASLt's GELU epilogue: the device says its GELU is gelu_new, and the aux matrix (when one
    /// is saved) has a leading dimension cuBLASLt takes (a multiple of 8).
    /// </summary>
    public static bool UsesGeluEpilogue(IBlas blas, int outFeatures, bool savePre) =>
        blas.GeluEpilogueIsGeluNew && (!savePre || outFeatures % 8 == 0);

    /// <summary><see cref="LinearGeluOp"/>'s backward on the CUDA backend, the contract checked.</summary>
    public static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor weight, Tensor pre, Tensor? dx, Tensor? dWeight, Tensor? dBias,
        int rows, int inFeatures, int outFeatures, bool gradientIsPreActivation = false)
    {
        if (gradientIsPreActivation)
        {
            CudaLinear.Backward(cuda, dOutput, x, weight, dx, dWeight, dBias, rows, inFeatures, outFeatures);
            return;
        }
        if (rows == 0 || outFeatures == 0)
        {
            CudaLinear.Backward(cuda, dOutput, x, weight, dx, dWeight, null, rows, inFeatures, outFeatures);
            return;
        }
        using var dh = cuda.Allocate(pre.Shape, pre.DType, nameof(pre));
        bool kernelBias = dBias is { DType: DType.F32 };
        GeluKernels.BiasGeluNewBackward(cuda.DeviceApi, x.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(pre, nameof(pre)),
            cuda.Pointer(dh, "dh"), kernelBias ? cuda.Pointer(dBias!, nameof(dBias)) : DevicePtr.Null, rows, outFeatures, cuda.Stream);
        CudaLinear.Backward(cuda, dh, x, weight, dx, dWeight, kernelBias ? null : dBias, rows, inFeatures, outFeatures);
    }
}
