using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Launchers for kernels/adamw.cu: one torch.optim.AdamW update of an fp32 parameter, in place, with its fp32 moments,
/// equal bit for bit to the CPU backend's <see cref="IBackend.AdamWStep"/>: the step's scalars are formed here in
/// double and rounded once to fp32 exactly as the CPU backend forms them (<see cref="Scalars"/>), and the kernel does
/// the CPU's fp32 operations in the CPU's order, one rounding each.
/// </summary>
/// <remarks>
/// Gradient clipping is the caller's, as on the CPU: GradientClipping scales every gradient by one coefficient
/// (<see cref="ElementwiseKernels.Scale"/> on the device) before the step; the step reads the gradient as it is.
/// </remarks>
public static unsafe class AdamWKernels
{
    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32];

    /// <summary>
    /// The fp32 scalars of one step, each formed in double and rounded once, as CpuAdamW forms them:
    /// decay = 1 - lr wd, 1 - beta1, 1 - beta2, -lr / (1 - beta1^step), sqrt(1 - beta2^step), eps.
    /// </summary>
    /// <param name="Decay">1 - lr * weight decay: the parameter's factor before the update (1: no decay).</param>
    /// <param name="Beta1">beta1.</param>
    /// <param name="OneMinusBeta1">1 - beta1.</param>
    /// <param name="Beta2">beta2.</param>
    /// <param name="OneMinusBeta2">1 - beta2.</param>
    /// <param name="NegativeStepSize">-lr / (1 - beta1^step): the first moment's bias correction folded into the step.</param>
    /// <param name="Correction2Root">sqrt(1 - beta2^step): sqrt(v) is divided by it before eps is added.</param>
    /// <param name="Epsilon">eps.</param>
    public readonly record struct StepScalars(float Decay, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2,
        float NegativeStepSize, float Correction2Root, float Epsilon);

    /// <summary>The scalars of the step <paramref name="arguments"/> describes, after validating them.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An argument torch.optim.AdamW rejects, or a step below 1.</exception>
    public static StepScalars Scalars(in AdamWStepArguments arguments)
    {
        arguments.Validate();
        double lr = arguments.LearningRate;
        return new StepScalars(
            Decay: (float)(1 - lr * arguments.WeightDecay),
            Beta1: (float)arguments.Beta1,
            OneMinusBeta1: (float)(1 - arguments.Beta1),
            Beta2: (float)arguments.Beta2,
            OneMinusBeta2: (float)(1 - arguments.Beta2),
            NegativeStepSize: (float)(-lr / (1 - Math.Pow(arguments.Beta1, arguments.Step))),
            Correction2Root: (float)Math.Sqrt(1 - Math.Pow(arguments.Beta2, arguments.Step)),
            Epsilon: (float)arguments.Epsilon);
    }

    /// <summary>
    /// One AdamW update of <paramref name="parameter"/> [n] and its moments, in place:
    /// p = p * decay; m = m * b1 + g * (1 - b1); v = v * b2 + (g * (1 - b2)) * g;
    /// p = (m / (sqrt(v) / sqrt(1 - b2^t) + eps)) * (-lr / (1 - b1^t)) + p.
    /// Launch: grid ((n + 255) / 256), block (256), no dynamic shared memory.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32: the parameter and its gradient (the moments are fp32 always).</param>
    /// <param name="parameter">[n] the parameter, updated.</param>
    /// <param name="gradient">[n] its gradient, read only.</param>
    /// <param name="firstMoment">[n] fp32 exp_avg, updated (zeros before the first step).</param>
    /// <param name="secondMoment">[n] fp32 exp_avg_sq, updated (zeros before the first step).</param>
    /// <param name="n">Elements, 1..2^31-1.</param>
    /// <param name="arguments">Learning rate, betas, epsilon, weight decay and the 1-based step of this parameter.</param>
    /// <param name="stream">The stream.</param>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or two of the buffers the same.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> out of range, or an argument torch rejects.</exception>
    public static void AdamWStep(IDeviceApi device, DType dtype, DevicePtr parameter, DevicePtr gradient, DevicePtr firstMoment,
        DevicePtr secondMoment, long n, in AdamWStepArguments arguments, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("adamw", dtype, Supported);
        LaunchArguments.Pointer(parameter, dtype, nameof(parameter));
        LaunchArguments.Pointer(gradient, dtype, nameof(gradient));
        LaunchArguments.Pointer(firstMoment, DType.F32, nameof(firstMoment));
        LaunchArguments.Pointer(secondMoment, DType.F32, nameof(secondMoment));
        int count = LaunchShape.Count(n, nameof(n));
        (DevicePtr Pointer, string Name)[] buffers =
            [(parameter, nameof(parameter)), (gradient, nameof(gradient)), (firstMoment, nameof(firstMoment)), (secondMoment, nameof(secondMoment))];
        for (int i = 1; i < buffers.Length; i++)
            for (int j = 0; j < i; j++)
                if (buffers[i].Pointer == buffers[j].Pointer)
                    throw new ArgumentException($"{buffers[i].Name} must not alias {buffers[j].Name}: AdamW reads and writes four separate buffers", buffers[i].Name);
        var s = Scalars(arguments);
        float decay = s.Decay, beta1 = s.Beta1, oneMinusBeta1 = s.OneMinusBeta1, beta2 = s.Beta2, oneMinusBeta2 = s.OneMinusBeta2;
        float negativeStepSize = s.NegativeStepSize, correction2Root = s.Correction2Root, eps = s.Epsilon;
        nint* args = stackalloc nint[]
        {
            (nint)(&parameter), (nint)(&gradient), (nint)(&firstMoment), (nint)(&secondMoment), (nint)(&decay), (nint)(&beta1),
            (nint)(&oneMinusBeta1), (nint)(&beta2), (nint)(&oneMinusBeta2), (nint)(&negativeStepSize), (nint)(&correction2Root),
            (nint)(&eps), (nint)(&count),
        };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 13));
    }
}
