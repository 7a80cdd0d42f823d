namespace Phi2Native.Cuda.Gpu;

// The device's matrix products: cuBLAS/cuBLASLt handles made on first use.
public sealed partial class CudaDevice
{
    private readonly object _blasGate = new();
    private CudaBlas? _blas;

    /// <inheritdoc />
    /// <remarks>
    /// Created on first use, with this device's context current (cuBLAS binds its handles to the current context),
    /// and disposed by <see cref="Dispose"/> before the allocations are freed (its workspace is one of them).
    /// </remarks>
    internal IBlas Blas
    {
        get
        {
            Enter();
            lock (_blasGate) return _blas ??= new CudaBlas(this);
        }
    }
}
