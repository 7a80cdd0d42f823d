using Phi2Native.Cuda;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Launchers for kernels/elementwise.cu. Arguments travel exactly as cuLaunchKernel's kernelParams: an array of
/// pointers, element i pointing at parameter i's value (here, the method's own parameters).
/// </summary>
public static unsafe class ElementwiseKernels
{
    private const uint BlockSize = 256;

    /// <summary>y[i] = a[i] + b[i] for i &lt; n (fp32). y may alias a or b.</summary>
    public static void AddF32(IDeviceApi device, DevicePtr a, DevicePtr b, DevicePtr y, long n, DeviceStream stream = default)
    {
        int count = LaunchShape.Count(n, nameof(n));
        nint* args = stackalloc nint[] { (nint)(&a), (nint)(&b), (nint)(&y), (nint)(&count) };
        device.Launch("add_f32", LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4));
    }

    /// <summary>y[i] = alpha * x[i] for i &lt; n (fp32). y may alias x.</summary>
    public static void ScaleF32(IDeviceApi device, DevicePtr x, DevicePtr y, float alpha, long n, DeviceStream stream = default)
    {
        int count = LaunchShape.Count(n, nameof(n));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&alpha), (nint)(&count) };
        device.Launch("scale_f32", LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4));
    }
}
