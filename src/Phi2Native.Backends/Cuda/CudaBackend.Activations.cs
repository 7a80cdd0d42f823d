using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The dropouts (kernels/dropout.cu), element-wise in F32, BF16 or F16 with
// fp32 math; dropout's counter-based mask is the CPU backend's, bit for bit, so a seed drops the same elements on
// every backend.
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    public Tensor Dropout(Tensor x, double p, ulong seed)
    {
        var px = Pointer(x, nameof(x));
        RequireDType(x, nameof(Dropout), nameof(x), DType.F32, DType.BF16, DType.F16);
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "the drop probability p must be in [0, 1)");
        var y = Allocate(x.Shape, x.DType, nameof(x));
        if (x.ElementCount > 0) DropoutKernels.Dropout(_device, x.DType, px, Pointer(y, "y"), p, seed, x.ElementCount, _stream);
        return y;
    }

    /// <inheritdoc/>
    public void DropoutBackward(Tensor dOutput, Tensor dx, double p, ulong seed)
    {
        var pdy = Pointer(dOutput, nameof(dOutput));
        var pdx = Pointer(dx, nameof(dx));
        RequireDType(dOutput, nameof(DropoutBackward), nameof(dOutput), DType.F32, DType.BF16, DType.F16);
        RequireCount(dx, dOutput.ElementCount, $"DropoutBackward dx (like dOutput [{dOutput.ShapeText}])");
        RequireSameDType(dx, dOutput.DType, nameof(DropoutBackward), nameof(dx));
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "the drop probability p must be in [0, 1)");
        if (dOutput.ElementCount > 0) DropoutKernels.DropoutBackward(_device, dOutput.DType, pdy, pdx, p, seed, dOutput.ElementCount, _stream);
    }
}
