using System.Numerics.Tensors;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/reduce.cu through <see cref="ReductionKernels"/>: row sums and maxima of F32, BF16 and F16 matrices, each
/// row compared with System.Numerics.Tensors' Sum and Max (what the CPU backend reduces with) over the same widened
/// values. Shapes cover a row wider than the block (2561: ten strided columns per thread, odd), a row of 80, and rows
/// narrower than a warp (7, 1). The sum of squares of a whole buffer (sum_of_squares_{dtype}, then row_sum_f32 over the
/// per-block partials) is compared with the CPU backend's SumOfSquares (fp32 squares summed in double) rounded to fp32,
/// over sizes of one block (1, 200: one launch), a few blocks, and more than the 1024-block grid holds, with a NaN, an
/// infinity or a square that overflows fp32 among the values; the result lands at an offset into a vector, whose
/// neighbours must stay as they were.
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
        .. from d in Types
           from n in new[] { 1, 200, 1001 }
           select SumOfSquaresCheck(d, n),
        SumOfSquaresCheck(DType.F32, 300_001), // more than 1024 blocks of 256: the grid-stride loop and the full 1024 partials
        SumOfSquaresCheck(DType.F32, 1001, special: float.NaN),
        SumOfSquaresCheck(DType.F32, 1001, special: float.NegativeInfinity),
        SumOfSquaresCheck(DType.BF16, 1001, special: 3e38f), // its square overflows fp32: +Inf, as the CPU's double sum of fp32 squares
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

    private static DeviceCheck SumOfSquaresCheck(DType dtype, int n, float? special = null)
    {
        string kernel = "sum_of_squares_" + KernelName.Suffix(dtype);
        int blocks = ReductionKernels.SumOfSquaresBlocks(n);
        return new($"{kernel} n={n}{(special is { } s ? $" with {s:R}" : "")}", blocks > 1 ? [kernel, "row_sum_f32"] : [kernel],
            device => SumOfSquares(device, dtype, n, special));
    }

    private static CheckResult SumOfSquares(IDeviceApi device, DType dtype, int n, float? special)
    {
        float[] x = TestData.Uniform(n, seed: 31 + n, scale: 1.5f);
        if (special is { } s) x[n / 2] = s;
        int blocks = ReductionKernels.SumOfSquaresBlocks(n);
        float[] neighbours = [7f, 7f, 7f];
        using var dx = DeviceBuffer.Upload(device, dtype, x);
        using var results = DeviceBuffer.Upload(device, DType.F32, neighbours);
        using var workspace = blocks > 1 ? DeviceBuffer.Allocate(device, DType.F32, blocks) : null;
        ReductionKernels.SumOfSquares(device, dtype, dx.Pointer, results.Pointer.Offset(sizeof(float)), workspace?.Pointer ?? DevicePtr.Null, n);
        float[] actual = results.Download();

        using var cpu = new CpuReference();
        using var t = cpu.Stored(dtype, x, n);
        float expected = (float)cpu.Backend.SumOfSquares(t);
        return CheckResult.Combine(
            Tolerances.Forward(DType.F32).Compare("sum", actual.AsSpan(1, 1), [expected]),
            CheckResult.CompareBits("the result's neighbours", [actual[0], actual[2]], [7f, 7f]));
    }
}
