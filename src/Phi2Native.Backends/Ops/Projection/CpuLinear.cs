using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Projection;

// Linear on the CPU backend through CpuGemm, in row-major terms with N rows:
//   y [N, out] = x [N, in] W^T [in, out] (+ b per row);  dx [N, in] = dY [N, out] W [out, in];
//   dW [out, in] += dY^T [out, N] x [N, in];  dBias [out] += column sums of dY.
internal static class CpuLinear
{
    /// <summary><see cref="LinearOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, Tensor weight, Tensor? bias, int rows, int inFeatures, int outFeatures)
    {
        var y = cpu.Allocate([.. x.Shape[..^1], outFeatures], x.DType);
        if (x.DType == DType.F64) Forward(Span<double>(x), Span<double>(weight), Optional<double>(bias), Span<double>(y), rows, inFeatures, outFeatures, accumulate: false);
        else Forward(Span<float>(x), Span<float>(weight), Optional<float>(bias), Span<float>(y), rows, inFeatures, outFeatures, accumulate: false);
        return y;
    }

    /// <summary><see cref="LinearOp.ForwardAdding"/> on the CPU backend, the contract checked: the product accumulated onto the residual (beta 1), then the bias.</summary>
    public static Tensor ForwardAdding(CpuBackend cpu, Tensor x, Tensor weight, Tensor? bias, Tensor residual, bool inPlace, int rows, int inFeatures, int outFeatures)
    {
        var y = inPlace ? residual : cpu.Allocate(residual.Shape, residual.DType);
        if (!inPlace) cpu.Copy(residual, y);
        if (x.DType == DType.F64) Forward(Span<double>(x), Span<double>(weight), Optional<double>(bias), Span<double>(y), rows, inFeatures, outFeatures, accumulate: true);
        else Forward(Span<float>(x), Span<float>(weight), Optional<float>(bias), Span<float>(y), rows, inFeatures, outFeatures, accumulate: true);
        return y;
    }

    /// <summary>
    /// <see cref="LinearOp"/>'s backward on the CPU backend, the contract checked. <paramref name="accumulateDx"/>: dx +=
    /// dY W, the product taken into a temporary and added, so the sum is bit for bit the unfused ops' (a fresh dx
    /// delivered, then added to the pending gradient).
    /// </summary>
    public static void Backward(Tensor dOutput, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias, int rows, int inFeatures, int outFeatures,
        bool accumulateDx = false)
    {
        if (x.DType == DType.F64)
            Backward(Span<double>(dOutput), Span<double>(x), Span<double>(weight), Optional<double>(dx), Optional<double>(dWeight), Optional<double>(dBias),
                rows, inFeatures, outFeatures, accumulateDx);
        else
            Backward(Span<float>(dOutput), Span<float>(x), Span<float>(weight), Optional<float>(dx), Optional<float>(dWeight), Optional<float>(dBias),
                rows, inFeatures, outFeatures, accumulateDx);
    }

    private static void Forward<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> weight, ReadOnlySpan<T> bias, Span<T> y, int rows, int inFeatures, int outFeatures,
        bool accumulate) where T : unmanaged, IFloatingPointIeee754<T>
    {
        CpuGemm.Gemm(false, true, rows, outFeatures, inFeatures, x, inFeatures, weight, inFeatures, accumulate, y, outFeatures);
        AddToEveryRow(y, bias);
    }

    private static void Backward<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ReadOnlySpan<T> weight, Span<T> dx, Span<T> dWeight, Span<T> dBias,
        int rows, int inFeatures, int outFeatures, bool accumulateDx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!dx.IsEmpty)
        {
            var into = accumulateDx ? new T[dx.Length] : dx;
            CpuGemm.Gemm(false, false, rows, inFeatures, outFeatures, dy, outFeatures, weight, inFeatures, false, into, inFeatures);
            if (accumulateDx) TensorPrimitives.Add(dx, into, dx);
        }
        if (!dWeight.IsEmpty) CpuGemm.Gemm(true, false, outFeatures, inFeatures, rows, dy, outFeatures, x, inFeatures, true, dWeight, inFeatures);
        AddColumnSums(dy, dBias);
    }

    private static void AddToEveryRow<T>(Span<T> matrix, ReadOnlySpan<T> row) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (row.IsEmpty) return;
        for (int start = 0; start < matrix.Length; start += row.Length)
            TensorPrimitives.Add(matrix.Slice(start, row.Length), row, matrix.Slice(start, row.Length));
    }

    private static void AddColumnSums<T>(ReadOnlySpan<T> matrix, Span<T> sums) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (sums.IsEmpty) return;
        for (int start = 0; start < matrix.Length; start += sums.Length)
            TensorPrimitives.Add(sums, matrix.Slice(start, sums.Length), sums);
    }

    private static Span<T> Span<T>(Tensor tensor) where T : unmanaged => CpuBackend.Span<T>(tensor);

    private static Span<T> Optional<T>(Tensor? tensor) where T : unmanaged => CpuBackend.Optional<T>(tensor);
}
