using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/transpose.cu through <see cref="TransposeKernels"/>, against the CPU backend's Transpose, bit for bit: sizes
/// that are and are not multiples of the 32 x 32 tile, a single row and a single column, in F32 and BF16.
/// </summary>
public static class TransposeChecks
{
    private static readonly (int Rows, int Cols)[] Shapes = [(37, 45), (64, 32), (1, 70), (33, 1), (80, 100)];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. from s in Shapes select Check(DType.F32, s.Rows, s.Cols),
        Check(DType.BF16, 37, 45),
        Check(DType.BF16, 64, 32),
        Check(DType.BF16, 1, 70),
    ];

    private static DeviceCheck Check(DType dtype, int rows, int cols)
    {
        string kernel = $"transpose_{KernelName.Suffix(dtype)}";
        return new($"{kernel} [{rows}, {cols}]", [kernel], device => Run(device, dtype, rows, cols));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int rows, int cols)
    {
        float[] x = TestData.Uniform(rows * cols, seed: 1700 + rows * 3 + cols);
        using var dx = DeviceBuffer.Upload(device, dtype, x);
        using var dy = DeviceBuffer.Allocate(device, dtype, rows * cols);
        TransposeKernels.Transpose(device, dtype, dx.Pointer, dy.Pointer, rows, cols);

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, x, rows, cols);
        using var cy = cpu.Backend.Transpose(cx);
        return CheckResult.CompareBits("y", dy.Download(), cy.ToSingleArray());
    }
}
