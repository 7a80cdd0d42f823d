using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using Tensor = Phi2Native.Tensors.Tensor;
namespace Phi2Native.Backends.Ops.Optimizer;

/// <summary>
/// <see cref="GradientCheckOp"/> and <see cref="AdamWOp"/> on the CPU backend, the contract checked: the status block
/// is written and read in host memory, in kernels/optimizer.cu's layout and fold order.
/// </summary>
internal static class CpuOptimizer
{
    /// <summary>Elements per fp32 partial sum: the sums of squares add these chunks' fp32 sums in double.</summary>
    internal const int SumChunk = 4096;

    public static void Measure(IReadOnlyList<Tensor?> tensors, IReadOnlyList<Tensor> losses, double maxNorm, StepStatus status)
    {
        double total = 0, firstSquares = 0, lossSum = 0;
        int first = -1;
        for (int i = 0; i < tensors.Count; i++)
        {
            if (tensors[i] is not { } tensor) continue;
            double sum = SumOfSquares(tensor);
            total += sum;
            if (first < 0 && !double.IsFinite(sum))
            {
                first = i;
                firstSquares = sum;
            }
        }
        foreach (var loss in losses)
            lossSum += loss.DType == DType.F64 ? CpuBackend.Span<double>(loss)[0] : CpuBackend.Span<float>(loss)[0];
        double scale = 1;
        if (maxNorm > 0)
        {
            double coefficient = maxNorm / (Math.Sqrt(total) + 1e-6);
            if (coefficient < 1) scale = coefficient;
        }
        // A window's step after a skipped one is skipped too (kernels/optimizer.cu's step_status).
        bool halted = status.Current > 0 && Block(status, status.Current - 1).Skip != 0;
        ref var block = ref Block(status, status.Current);
        block = new StepStatus.Block
        {
            LossSum = lossSum,
            SumOfSquares = total,
            FirstSquares = firstSquares,
            ClipScale = scale,
            FirstNonFinite = first,
            Skip = halted || first >= 0 || !double.IsFinite(total) || !double.IsFinite(lossSum) ? 1 : 0,
        };
    }

    public static void AdamW(IReadOnlyList<AdamWTensors> tensors, StepStatus? status)
    {
        double scale = 1;
        if (status is not null)
        {
            ref var block = ref Block(status, status.Current);
            if (block.Skip != 0) return;
            scale = block.ClipScale;
        }
        foreach (var (parameter, gradient, first, second, arguments) in tensors)
        {
            if (parameter.DType == DType.F64)
                CpuAdamW.Step(CpuBackend.Span<double>(parameter), CpuBackend.Span<double>(gradient), CpuBackend.Span<double>(first), CpuBackend.Span<double>(second), arguments, scale);
            else
                CpuAdamW.Step(CpuBackend.Span<float>(parameter), CpuBackend.Span<float>(gradient), CpuBackend.Span<float>(first), CpuBackend.Span<float>(second), arguments, (float)scale);
        }
    }

    private static double SumOfSquares(Tensor tensor)
    {
        if (tensor.DType == DType.F64) return TensorPrimitives.SumOfSquares(CpuBackend.Span<double>(tensor));
        var values = CpuBackend.Span<float>(tensor);
        double total = 0;
        for (int start = 0; start < values.Length; start += SumChunk)
            total += TensorPrimitives.SumOfSquares(values.Slice(start, Math.Min(SumChunk, values.Length - start)));
        return total;
    }

    private static ref StepStatus.Block Block(StepStatus status, int index) =>
        ref MemoryMarshal.AsRef<StepStatus.Block>(CpuBackend.Bytes(status.Tensor).Slice(index * StepStatus.Bytes, StepStatus.Bytes));
}
