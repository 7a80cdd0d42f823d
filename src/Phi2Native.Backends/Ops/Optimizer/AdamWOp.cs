using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Optimizer;

/// <summary>One parameter of an <see cref="AdamWOp.Step"/>: the tensors it updates and reads, and its step's scalars.</summary>
/// <param name="Parameter">[n] the parameter, updated in place.</param>
/// <param name="Gradient">[n] its gradient, read only (its dtype).</param>
/// <param name="FirstMoment">[n] exp_avg, updated (F32; F64 beside an F64 parameter); zeros before the first step.</param>
/// <param name="SecondMoment">[n] exp_avg_sq, updated, as <paramref name="FirstMoment"/>.</param>
/// <param name="Arguments">Learning rate, betas, epsilon, weight decay and this parameter's 1-based step.</param>
public readonly record struct AdamWTensors(Tensor Parameter, Tensor Gradient, Tensor FirstMoment, Tensor SecondMoment, AdamWStepArguments Arguments);

/// <summary>
/// torch.optim.AdamW's update (amsgrad off) of many parameters at once: one multi-tensor launch on the CUDA backend,
/// bit for bit the CPU backend's arithmetic (kernels/optimizer.cu). With a <see cref="StepStatus"/>, each gradient is
/// first multiplied by its clip scale and a step the status marks skipped changes nothing, both decided in the
/// backend's memory; the caller learns which from <see cref="StepStatus.Read"/>.
/// </summary>
public static class AdamWOp
{
    /// <summary>The op and the dtypes of the parameters each backend updates.</summary>
    public static BackendOp Info { get; } = new("AdamW", BackendOp.CpuFloats, [DType.F32]);

    /// <summary>Queues one update of every entry of <paramref name="tensors"/>.</summary>
    /// <param name="tensors">The parameters, each with its gradient, moments and scalars; no tensor may appear twice.</param>
    /// <param name="status">The step's checked status (its verdict and clip scale), or null: scale 1, never skipped.</param>
    /// <exception cref="ArgumentException">Sizes or dtypes that do not match, tensors on several backends, or a tensor used twice.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scalar torch.optim.AdamW rejects, or a step below 1 (<see cref="AdamWStepArguments.Validate"/>).</exception>
    /// <exception cref="NotSupportedException">A parameter dtype the backend does not update.</exception>
    public static void Step(IReadOnlyList<AdamWTensors> tensors, StepStatus? status = null)
    {
        const string op = "AdamW";
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Count == 0) return;
        var backend = status?.Backend ?? tensors[0].Parameter?.Backend!;
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < tensors.Count; i++)
        {
            var (parameter, gradient, first, second, arguments) = tensors[i];
            string at = $"{nameof(tensors)}[{i}]";
            OpContract.OnBackend(parameter, backend, op, $"{at}.Parameter");
            Info.RequireSupported(parameter, $"{at}.Parameter");
            var moments = parameter.DType == DType.F64 ? DType.F64 : DType.F32;
            foreach (var (tensor, name, dtype) in new[] { (gradient, "Gradient", parameter.DType), (first, "FirstMoment", moments), (second, "SecondMoment", moments) })
            {
                OpContract.OnBackend(tensor, backend, op, $"{at}.{name}");
                OpContract.Count(tensor, parameter.ElementCount, op, $"{at}.{name}", $"like the parameter [{parameter.ShapeText}]");
                OpContract.DType(tensor, dtype, op, $"{at}.{name}");
            }
            foreach (var tensor in new[] { parameter, gradient, first, second })
                if (!seen.Add(tensor)) throw new ArgumentException($"{op}: {at} uses {tensor} a second time; every parameter, gradient and moment must be its own tensor", nameof(tensors));
            try
            {
                arguments.Validate();
            }
            catch (ArgumentOutOfRangeException e)
            {
                throw new ArgumentOutOfRangeException($"{at}.Arguments.{e.ParamName}", e.ActualValue, e.Message);
            }
        }
        switch (backend)
        {
            case CpuBackend: CpuOptimizer.AdamW(tensors, status); break;
            case CudaBackend cuda: OptimizerKernels.AdamW(cuda, tensors, status); break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }
}
