using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The MLP's activation and the residual dropout: their kernels (kernels/gelu.cu with GeluKernels, and DropoutKernels)
// are not built yet, so these ops refuse with NotSupportedException naming them.
public sealed partial class CudaBackend
{
    private const string MissingGelu = "the CUDA backend needs the gelu_new kernels (kernels/gelu.cu, GeluKernels), which are not built yet";
    private const string MissingDropout = "the CUDA backend needs the dropout kernels (DropoutKernels), which are not built yet";

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the gelu_new kernels (GeluKernels) are built.</exception>
    public Tensor GeluNew(Tensor x)
    {
        Pointer(x, nameof(x));
        throw new NotSupportedException($"{nameof(GeluNew)}: {MissingGelu}");
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the gelu_new kernels (GeluKernels) are built.</exception>
    public void GeluNewBackward(Tensor dOutput, Tensor x, Tensor dx)
    {
        Pointer(dOutput, nameof(dOutput));
        throw new NotSupportedException($"{nameof(GeluNewBackward)}: {MissingGelu}");
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the dropout kernels (DropoutKernels) are built.</exception>
    public Tensor Dropout(Tensor x, double p, ulong seed)
    {
        Pointer(x, nameof(x));
        throw new NotSupportedException($"{nameof(Dropout)}: {MissingDropout}");
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the dropout kernels (DropoutKernels) are built.</exception>
    public void DropoutBackward(Tensor dOutput, Tensor dx, double p, ulong seed)
    {
        Pointer(dOutput, nameof(dOutput));
        throw new NotSupportedException($"{nameof(DropoutBackward)}: {MissingDropout}");
    }
}
