using System.Numerics.Tensors;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/reduce.cu through <see cref="ReductionKernels"/>: row sums and maxima of F32, BF16 and F16 matrices, each
/// row compared with System.Numerics.Tensors' Sum and Max (what the CPU backend reduces with) over the same widened
/// values. Shapes cover a row wider than the block (2561: ten strided columns per thread, odd), a row of 80, and rows
/// narrower than a warp (7, 1).
/// </summary>
public static class ReductionChecks
{
    private static readonly DType[] Types = [DType.F32, DType.BF16, DType.F16];
    private static readonly (int Rows, int Cols)[] Shapes = [(3, 2561), (4, 80), (5, 7)];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. from op in new[] { "row_sum", "row_max" }
           from d in Types
           from s in Shapes
           select Check($"{op}_{KernelName.Suffix(d)} [{s.Rows}, {s.Cols}]", op, d, device => Reduce(device, op, d, s.Rows, s.Cols)),
        Check("row_max_f32 [2, 1]", "row_max", DType.F32, device => Reduce(device, "row_max", DType.F32, 2, 1)),
        Check("row_sum_f32 special rows", "row_sum", DType.F32, device => Special(device, "row_sum")),
        Check("row_max_f32 special rows", "row_max", DType.F32, device => Special(device, "row_max")),
    ];

    private static DeviceCheck Check(string name, string op, DType dtype, Func<IDeviceApi, CheckResult> run) =>
        new(name, [op + "_" + KernelName.Suffix(dtype)], run);

    private static CheckResult Reduce(IDeviceApi device, string op, DType dtype, int rows, int cols)
    {
        // Offset from zero so the sums do not cancel to nothing, and the maxima are not all near 1.
        float[] x = [.. TestData.Uniform(rows * cols, seed: 11 + cols, scale: 2f).Select(v => v + 0.25f)];
        return Run(device, op, dtype, x, rows, cols);
    }

    // Rows holding a NaN (it propagates, as torch.max's and TensorPrimitives' do), only -Inf (the max's identity
    // must not leak out as something else), an Inf among finite values, and only negative values (a max that
    // started from 0 instead of -Inf would say 0).
    private static CheckResult Special(IDeviceApi device, string op)
    {
        const int cols = 45;
        float[][] rows =
        [
            [.. Enumerable.Range(0, cols).Select(c => c == 37 ? float.NaN : c * 0.5f)],
            [.. Enumerable.Repeat(float.NegativeInfinity, cols)],
            [.. Enumerable.Range(0, cols).Select(c => c == 3 ? float.PositiveInfinity : -c)],
            [.. Enumerable.Range(0, cols).Select(c => -1f - c * 0.25f)],
        ];
        return Run(device, op, DType.F32, [.. rows.SelectMany(r => r)], rows.Length, cols);
    }

    private static CheckResult Run(IDeviceApi device, string op, DType dtype, float[] x, int rows, int cols)
    {
        using var dx = DeviceBuffer.Upload(device, dtype, x);
        using var dy = DeviceBuffer.Allocate(device, DType.F32, rows);
        if (op == "row_sum") ReductionKernels.RowSum(device, dtype, dx.Pointer, dy.Pointer, rows, cols);
        else ReductionKernels.RowMax(device, dtype, dx.Pointer, dy.Pointer, rows, cols);
        float[] actual = dy.Download();

        float[] stored = CpuReference.RoundTrip(dtype, x);
        var expected = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = stored.AsSpan(r * cols, cols);
            expected[r] = op == "row_sum" ? TensorPrimitives.Sum<float>(row) : TensorPrimitives.Max<float>(row);
        }
        // The maximum is one of the inputs: exact. The sum is fp32 in another order.
        return op == "row_max" ? CheckResult.CompareBits("y", actual, expected) : Tolerances.Forward(DType.F32).Compare("y", actual, expected);
    }
}
