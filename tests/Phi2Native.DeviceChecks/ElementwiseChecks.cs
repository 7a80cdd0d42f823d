using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>kernels/elementwise.cu through <see cref="ElementwiseKernels"/>, against plain fp32 arithmetic.</summary>
public static class ElementwiseChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        new("add_f32 n=1000", ["add_f32"], device => Add(device, 1000)),
        new("add_f32 n=1 in place", ["add_f32"], device => Add(device, 1, inPlace: true)),
        new("scale_f32 n=77 in place", ["scale_f32"], device => Scale(device, 77, -2.5f)),
    ];

    // An odd n leaves the last block partial: the kernel's bound check is what keeps y's neighbour intact.
    private static CheckResult Add(IDeviceApi device, int n, bool inPlace = false)
    {
        float[] a = TestData.Uniform(n, seed: 1), b = TestData.Uniform(n, seed: 2);
        using var da = DeviceBuffer.Upload(device, DType.F32, a);
        using var db = DeviceBuffer.Upload(device, DType.F32, b);
        using var dy = inPlace ? null : DeviceBuffer.Allocate(device, DType.F32, n);
        ElementwiseKernels.AddF32(device, da.Pointer, db.Pointer, (dy ?? da).Pointer, n);
        float[] expected = [.. a.Zip(b, (x, y) => x + y)];
        // fp32 addition is exact to the same rounding on every IEEE machine.
        return CheckResult.Compare("y", (dy ?? da).Download(), expected, 0, 0);
    }

    private static CheckResult Scale(IDeviceApi device, int n, float alpha)
    {
        float[] x = TestData.Uniform(n, seed: 3);
        using var dx = DeviceBuffer.Upload(device, DType.F32, x);
        ElementwiseKernels.ScaleF32(device, dx.Pointer, dx.Pointer, alpha, n);
        float[] expected = [.. x.Select(v => alpha * v)];
        return CheckResult.Compare("y", dx.Download(), expected, 0, 0);
    }
}
