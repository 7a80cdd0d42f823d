using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The fp32 accumulation of parameter gradients: kernels accumulate them in fp32 buffers, so a BF16 parameter gradient
// is widened into an fp32 scratch copy, accumulated there and rounded back once (AccumulateInSingle).
public sealed partial class CudaBackend
{
    /// <summary>
    /// Runs <paramref name="accumulate"/> on an fp32 view of the parameter gradient <paramref name="gradient"/>: its own
    /// memory when it is F32; otherwise an fp32 scratch copy (widened exactly), rounded back once afterwards. A null
    /// gradient passes the null pointer (not wanted).
    /// </summary>
    internal void AccumulateInSingle(Tensor? gradient, string argument, Action<DevicePtr> accumulate)
    {
        if (gradient is null) { accumulate(DevicePtr.Null); return; }
        var pointer = Pointer(gradient, argument);
        if (gradient.DType == DType.F32) { accumulate(pointer); return; }
        using var wide = Scratch(gradient.ElementCount * sizeof(float));
        CastKernels.Cast(_device, gradient.DType, DType.F32, pointer, wide.Pointer, gradient.ElementCount, _stream);
        accumulate(wide.Pointer);
        CastKernels.Cast(_device, DType.F32, gradient.DType, wide.Pointer, pointer, gradient.ElementCount, _stream);
    }
}
