using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Optimizer;

/// <summary>
/// A training step's check, written to a <see cref="StepStatus"/> without a host wait: the sum of squares of every
/// tensor (gradients, for the global norm and torch.nn.utils.clip_grad_norm_'s scale; or parameters), the first tensor
/// whose sum is not finite, the step's losses added up, and the verdict that <see cref="AdamWOp.Step"/> obeys. The
/// folds are in a fixed order (deterministic); the CPU adds fp32 sums of 4096-element chunks in double, the CUDA
/// kernels of 16384-element chunks, so the two agree to fp32 rounding (kernels/optimizer.cu).
/// </summary>
public static class GradientCheckOp
{
    /// <summary>The op and the dtypes of the tensors each backend measures (losses: F32, or F64 beside F64 on the CPU).</summary>
    public static BackendOp Info { get; } = new("GradientCheck", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    /// <summary>Measures <paramref name="tensors"/> (null entries count as empty) and <paramref name="losses"/> into <paramref name="status"/>.</summary>
    /// <param name="tensors">The tensors, in the order <see cref="StepStatusReport.FirstNonFinite"/> indexes.</param>
    /// <param name="losses">The step's scalar losses (one per micro-batch), added in order; may be empty.</param>
    /// <param name="maxNorm">The clipping threshold, finite and &gt;= 0; 0 measures without clipping (scale 1).</param>
    /// <param name="status">The block written; every tensor must be on its backend.</param>
    /// <exception cref="ArgumentException">A tensor on another backend, or a loss that is not one element.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxNorm"/> is negative, infinite or NaN.</exception>
    /// <exception cref="NotSupportedException">A dtype the backend does not measure.</exception>
    public static void Measure(IReadOnlyList<Tensor?> tensors, IReadOnlyList<Tensor> losses, double maxNorm, StepStatus status)
    {
        const string op = "GradientCheck";
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(losses);
        ArgumentNullException.ThrowIfNull(status);
        if (!NumberChecks.IsFiniteNonNegative(maxNorm))
            throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the maximum gradient norm must be a finite number >= 0 (0: no clipping)");
        var backend = status.Backend;
        for (int i = 0; i < tensors.Count; i++)
        {
            if (tensors[i] is not { } tensor) continue;
            OpContract.OnBackend(tensor, backend, op, $"{nameof(tensors)}[{i}]");
            Info.RequireSupported(tensor, $"{nameof(tensors)}[{i}]");
        }
        for (int i = 0; i < losses.Count; i++)
        {
            OpContract.OnBackend(losses[i], backend, op, $"{nameof(losses)}[{i}]");
            OpContract.Count(losses[i], 1, op, $"{nameof(losses)}[{i}]", "a scalar loss");
            if (losses[i].DType is not (DType.F32 or DType.F64) || (losses[i].DType == DType.F64 && backend is not CpuBackend))
                throw new ArgumentException($"{op}: {nameof(losses)}[{i}] is {losses[i].DType}, expected F32 (or F64 on the CPU)", nameof(losses));
        }
        switch (backend)
        {
            case CpuBackend: CpuOptimizer.Measure(tensors, losses, maxNorm, status); break;
            case CudaBackend cuda: OptimizerKernels.Measure(cuda, tensors, losses, maxNorm, status); break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }
}
