using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

// LoraLinearGeluOp on the CUDA backend (fc1 with a LoRA adapter, then gelu_new):
//
//   forward    h = x W^T + b           CudaLinear (cuBLASLt, BIAS epilogue: h rounded once, as an unfused Linear stores it)
//              u = dropout(x) A^T      lora_down
//              pre = h + scaling u B^T (fp32, rounded once), y = gelu_new(pre)     lora_up_gelu, pre written over h
//              3 launches, no gelu_new launch, whichever GELU cuBLASLt has; the rounding is the unfused ops' exactly.
//              Why not lora_up first and the base GEMM with beta 1 and cuBLASLt's GELU_AUX_BIAS epilogue: that rounds the
//              update to the dtype before the GEMM adds it (cuBLASLt's C is of D's dtype), needs the GELU epilogue to be
//              gelu_new (IBlas.GeluEpilogueIsGeluNew; else a 4th launch) and out a multiple of 8 for the aux; the bytes
//              are the same (update written and read back, y and pre written: 4 [N, out] passes, as h written, read,
//              pre and y written here).
//   backward   dh = dY gelu_new'(pre), dBias += its column sums    bias_gelu_new_backward (deterministic)
//              dB, du, dA, dx (=, or += into a pending gradient)  lora.cu's backward from dh (LoraKernels.Backward)
//              dx += dh W (beta 1), dW += dh^T x                  CudaLinear.Backward
//              Where fc2's dx product already took gelu_new's backward (DGELU epilogue, GeluGradientFusion), dY is dh:
//              no bias_gelu_new_backward, dBias (when it trains) by CudaLinear's ones-vector GEMM.
internal static class LoraLinearGeluKernels
{
    /// <summary><see cref="LoraLinearGeluOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    public static (Tensor Y, Tensor? Pre, Tensor U) Forward(CudaBackend cuda, Tensor x, Tensor weight, Tensor bias, Tensor a, Tensor b, LoraBranch branch,
        LoraShape shape, bool savePre)
    {
        var h = CudaLinear.Forward(cuda, x, weight, bias, shape.Rows, shape.In, shape.Out);
        var u = cuda.Allocate([.. x.Shape[..^1], shape.Rank], DType.F32, "u");
        // At inference y is written over h; training keeps h's buffer as pre and y is new.
        var y = savePre ? cuda.Allocate(h.Shape, h.DType, "y") : h;
        if (shape.Rows == 0) return (y, savePre ? h : null, u);
        var device = cuda.DeviceApi;
        var dtype = x.DType;
        var ph = cuda.Pointer(h, "h");
        LoraKernels.LoraDown(device, dtype, cuda.Pointer(x, nameof(x)), cuda.Pointer(a, nameof(a)), cuda.Pointer(u, "u"), branch.Dropout, branch.Seed,
            shape.Rows, shape.In, shape.Rank, cuda.Stream);
        LoraKernels.LoraUpGelu(device, dtype, cuda.Pointer(u, "u"), cuda.Pointer(b, nameof(b)), ph, cuda.Pointer(y, "y"), savePre ? ph : DevicePtr.Null,
            branch.Scaling, shape.Rows, shape.Out, shape.Rank, cuda.Stream);
        return (y, savePre ? h : null, u);
    }

    /// <summary><see cref="LoraLinearGeluOp"/>'s backward on the CUDA backend, the contract checked; dh [N, out] is its one temporary beside lora.cu's du.</summary>
    public static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor weight, Tensor a, Tensor b, Tensor u, Tensor pre, LoraBranch branch,
        LoraShape shape, Tensor? dx, Tensor? dWeight, Tensor? dBias, Tensor? dA, Tensor? dB, bool accumulateDx, bool gradientIsPreActivation = false,
        bool accumulateA = true, bool accumulateB = true)
    {
        if (shape.Rows == 0)
        {
            LoraKernels.Backward(cuda, dOutput, x, a, b, u, branch, shape, dx, dA, dB, accumulateDx, accumulateA, accumulateB); // fills written adapter gradients
            return;
        }
        if (gradientIsPreActivation)
        {
            LoraKernels.Backward(cuda, dOutput, x, a, b, u, branch, shape, dx, dA, dB, accumulateDx, accumulateA, accumulateB);
            CudaLinear.Backward(cuda, dOutput, x, weight, dx, dWeight, dBias, shape.Rows, shape.In, shape.Out, accumulateDx: dx is not null);
            return;
        }
        using var dh = cuda.Allocate(pre.Shape, pre.DType, nameof(pre));
        bool kernelBias = dBias is { DType: DType.F32 };
        GeluKernels.BiasGeluNewBackward(cuda.DeviceApi, x.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(pre, nameof(pre)),
            cuda.Pointer(dh, "dh"), kernelBias ? cuda.Pointer(dBias!, nameof(dBias)) : DevicePtr.Null, shape.Rows, shape.Out, cuda.Stream);
        LoraKernels.Backward(cuda, dh, x, a, b, u, branch, shape, dx, dA, dB, accumulateDx, accumulateA, accumulateB);
        CudaLinear.Backward(cuda, dh, x, weight, dx, dWeight, kernelBias ? null : dBias, shape.Rows, shape.In, shape.Out, accumulateDx: dx is not null);
    }
}
