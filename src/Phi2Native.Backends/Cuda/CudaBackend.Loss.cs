using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The AdamW step (kernels/adamw.cu).
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    /// <remarks>All four tensors are F32 (the kernel's only dtype: parameters that train are fp32 on this backend too).</remarks>
    public void AdamWStep(Tensor parameter, Tensor gradient, Tensor firstMoment, Tensor secondMoment, in AdamWStepArguments arguments)
    {
        var pp = Pointer(parameter, nameof(parameter));
        var pg = Pointer(gradient, nameof(gradient));
        var pm = Pointer(firstMoment, nameof(firstMoment));
        var pv = Pointer(secondMoment, nameof(secondMoment));
        foreach (var (tensor, what) in new[] { (gradient, "gradient"), (firstMoment, "first moment"), (secondMoment, "second moment") })
        {
            if (tensor.ElementCount != parameter.ElementCount || tensor.DType != parameter.DType)
                throw new ArgumentException($"AdamWStep: {what} [{tensor.ShapeText}] {tensor.DType} does not match parameter {parameter}");
        }
        RequireDType(parameter, nameof(AdamWStep), nameof(parameter), DType.F32);
        arguments.Validate();
        if (parameter.ElementCount == 0) return;
        AdamWKernels.AdamWStep(_device, DType.F32, pp, pg, pm, pv, parameter.ElementCount, arguments, _stream);
    }
}
