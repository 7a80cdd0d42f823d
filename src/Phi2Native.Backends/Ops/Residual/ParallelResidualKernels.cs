using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Residual;

/// <summary>Launchers for kernels/residual.cu (contracts in its header), and <see cref="ParallelResidualOp"/> on the CUDA backend.</summary>
internal static unsafe class ParallelResidualKernels
{
    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary><see cref="ParallelResidualOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    public static Tensor Forward(CudaBackend cuda, Tensor attention, Tensor mlp, Tensor hidden, double p, ulong seedA, ulong seedM)
    {
        var y = cuda.Allocate(hidden.Shape, hidden.DType, "y");
        if (hidden.ElementCount > 0)
            ParallelResidual(cuda.DeviceApi, hidden.DType, cuda.Pointer(attention, nameof(attention)), cuda.Pointer(mlp, nameof(mlp)),
                cuda.Pointer(hidden, nameof(hidden)), cuda.Pointer(y, "y"), p, seedA, seedM, hidden.ElementCount, cuda.Stream);
        return y;
    }

    /// <summary><see cref="ParallelResidualOp.Backward(Tensor, Tensor?, Tensor?, double, ulong, ulong)"/> on the CUDA backend, the contract checked.</summary>
    public static void Backward(CudaBackend cuda, Tensor dOutput, Tensor? dAttention, Tensor? dMlp, double p, ulong seedA, ulong seedM)
    {
        if (dOutput.ElementCount > 0)
            ParallelResidualBackward(cuda.DeviceApi, dOutput.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.OptionalPointer(dAttention, nameof(dAttention)),
                cuda.OptionalPointer(dMlp, nameof(dMlp)), p, seedA, seedM, dOutput.ElementCount, cuda.Stream);
    }

    /// <summary>Launches parallel_residual_{dtype}.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or y overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or n is not in 1..2^31-1.</exception>
    public static void ParallelResidual(IDeviceApi device, DType dtype, DevicePtr attention, DevicePtr mlp, DevicePtr hidden, DevicePtr y,
        double p, ulong seedA, ulong seedM, long n, DeviceStream stream)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("parallel_residual", dtype, Supported);
        LaunchArguments.Pointer(attention, dtype, nameof(attention));
        LaunchArguments.Pointer(mlp, dtype, nameof(mlp));
        LaunchArguments.Pointer(hidden, dtype, nameof(hidden));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        int count = LaunchShape.Count(n, nameof(n));
        long bytes = count * (long)dtype.SizeInBytes();
        foreach (var (input, name) in new[] { (attention, nameof(attention)), (mlp, nameof(mlp)), (hidden, nameof(hidden)) })
            BufferOverlap.RequireNone(input, bytes, y, bytes, name, nameof(y));
        var (threshold, scale) = DropoutKernels.Mask(p);
        nint* args = stackalloc nint[]
        {
            (nint)(&attention), (nint)(&mlp), (nint)(&hidden), (nint)(&y), (nint)(&threshold), (nint)(&scale), (nint)(&seedA), (nint)(&seedM), (nint)(&count),
        };
        // A dropped element's branch value is not read: 3 elements read is an upper bound under dropout.
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 9), KernelCost.Elementwise(n, dtype, 3, 1, 4));
    }

    /// <summary>Launches parallel_residual_backward_{dtype}; either gradient may be null, not both.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or a gradient overlapping dY or the other.</exception>
    /// <exception cref="ArgumentNullException">A null dY, or both gradients null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or n is not in 1..2^31-1.</exception>
    public static void ParallelResidualBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr dAttention, DevicePtr dMlp,
        double p, ulong seedA, ulong seedM, long n, DeviceStream stream)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("parallel_residual_backward", dtype, Supported);
        LaunchArguments.Pointer(dY, dtype, nameof(dY));
        bool hasAttention = LaunchArguments.OptionalPointer(dAttention, dtype, nameof(dAttention));
        bool hasMlp = LaunchArguments.OptionalPointer(dMlp, dtype, nameof(dMlp));
        if (!hasAttention && !hasMlp) throw new ArgumentNullException(nameof(dAttention), "both gradients are null: nothing to write");
        int count = LaunchShape.Count(n, nameof(n));
        long bytes = count * (long)dtype.SizeInBytes();
        if (hasAttention) BufferOverlap.RequireNone(dY, bytes, dAttention, bytes, nameof(dY), nameof(dAttention));
        if (hasMlp) BufferOverlap.RequireNone(dY, bytes, dMlp, bytes, nameof(dY), nameof(dMlp));
        if (hasAttention && hasMlp) BufferOverlap.RequireNone(dAttention, bytes, dMlp, bytes, nameof(dAttention), nameof(dMlp));
        var (threshold, scale) = DropoutKernels.Mask(p);
        nint* args = stackalloc nint[]
        {
            (nint)(&dY), (nint)(&dAttention), (nint)(&dMlp), (nint)(&threshold), (nint)(&scale), (nint)(&seedA), (nint)(&seedM), (nint)(&count),
        };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 8),
            KernelCost.Elementwise(n, dtype, 1, (hasAttention ? 1 : 0) + (hasMlp ? 1 : 0), 2));
    }
}
