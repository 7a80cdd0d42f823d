using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Determinism;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Dropout;

/// <summary>
/// Launchers for kernels/dropout.cu (each kernel's contract is in its header), and <see cref="DropoutOp"/> on the CUDA
/// backend. They take p and pass the kernels <see cref="DropoutMask.KeepThreshold"/>(p) and <see cref="Scale"/>(p); p = 0
/// is a device copy (none in place), no kernel.
/// </summary>
internal static unsafe class DropoutKernels
{
    /// <summary><see cref="DropoutOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor x, double p, ulong seed)
    {
        var y = cuda.Allocate(x.Shape, x.DType, nameof(x));
        if (x.ElementCount > 0) Dropout(cuda.DeviceApi, x.DType, cuda.Pointer(x, nameof(x)), cuda.Pointer(y, "y"), p, seed, x.ElementCount, cuda.Stream);
        return y;
    }

    /// <summary><see cref="DropoutOp"/>'s backward on the CUDA backend, the contract checked.</summary>
    internal static void Backward(CudaBackend cuda, Tensor dOutput, Tensor dx, double p, ulong seed)
    {
        if (dOutput.ElementCount > 0)
            DropoutBackward(cuda.DeviceApi, dOutput.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(dx, nameof(dx)), p, seed, dOutput.ElementCount, cuda.Stream);
    }

    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary>Launches dropout.cu's dropout_{dtype} over <paramref name="n"/> elements with the mask of <paramref name="seed"/> and drop probability <paramref name="p"/>.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output that partly overlaps an input (the same pointer, in place, is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or n is not in 1..2^31-1.</exception>
    public static void Dropout(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, double p, ulong seed, long n, DeviceStream stream = default) =>
        Launch("dropout", device, dtype, x, nameof(x), y, nameof(y), p, seed, n, stream);

    /// <summary>Launches dropout.cu's dropout_backward_{dtype}: the forward call's mask, from the same <paramref name="seed"/> and <paramref name="p"/>.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output that partly overlaps an input (the same pointer, in place, is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or n is not in 1..2^31-1.</exception>
    public static void DropoutBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr dX, double p, ulong seed, long n, DeviceStream stream = default) =>
        Launch("dropout_backward", device, dtype, dY, nameof(dY), dX, nameof(dX), p, seed, n, stream);

    /// <summary>1 / (1 - p) in double, rounded once to fp32: the factor the CPU backend's fp32 dropout multiplies by.</summary>
    public static float Scale(double p) => (float)(1.0 / (1.0 - p));

    /// <summary>The keep threshold (<see cref="DropoutMask.KeepThreshold"/>) and fp32 <see cref="Scale"/> a dropping kernel takes for p; p = 0 keeps every element, scaled by 1.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    internal static (uint Threshold, float Scale) Mask(double p)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "the drop probability p must be in [0, 1)");
        return (DropoutMask.KeepThreshold(p), Scale(p));
    }

    private static void Launch(string op, IDeviceApi device, DType dtype, DevicePtr input, string inputName, DevicePtr output, string outputName,
        double p, ulong seed, long n, DeviceStream stream)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For(op, dtype, Supported);
        LaunchArguments.Pointer(input, dtype, inputName);
        LaunchArguments.Pointer(output, dtype, outputName);
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "the drop probability p must be in [0, 1)");
        int count = LaunchShape.Count(n, nameof(n));
        BufferOverlap.RequireExactOrNone(input, output, count * (long)dtype.SizeInBytes(), inputName, outputName);
        if (p == 0)
        {
            // Every element kept, scaled by 1: the CPU copies, and so does this (no copy at all in place).
            if (input != output) device.CopyOnDevice(output, input, count * (long)dtype.SizeInBytes(), stream);
            return;
        }
        var (threshold, scale) = Mask(p);
        nint* args = stackalloc nint[] { (nint)(&input), (nint)(&output), (nint)(&threshold), (nint)(&scale), (nint)(&seed), (nint)(&count) };
        // The mask is recomputed from the counter (a SplitMix64 hash, ~12 integer ops, not counted as flops): 1 multiply an element.
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 6), KernelCost.Elementwise(n, dtype, 1, 1, 1));
    }
}
