// AdamW, torch.optim.AdamW's single-tensor algorithm (torch 1.13 `_single_tensor_adamw`, amsgrad off),
// in torch's order, element-wise over a parameter p [n], its gradient g [n] and its moments m, v [n]:
//
//   p = p * (1 - lr wd)                            decoupled weight decay, before anything else
//   m = b1 m + (1 - b1) g                          exp_avg
//   v = b2 v + (1 - b2) g g                        exp_avg_sq
//   p = p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc1 = 1 - b1^t, bc2 = 1 - b2^t
//
// The scalars (1 - lr wd, lr / bc1, sqrt(bc2)) are formed in double, as Python does, then rounded
// once to the element type. Epsilon is added after the bias correction of sqrt(v), not before: with
// the other order a parameter whose gradient is tiny moves by a different amount than in PyTorch.
// A clip scale other than 1 multiplies each gradient element first, one rounding, as scaling the gradient in
// place before the step does (torch.nn.utils.clip_grad_norm_ then step).
using System.Numerics;
using System.Numerics.Tensors;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Optimizer;

internal static class CpuAdamW
{
    /// <summary>Elements per stack scratch chunk, and per unit of parallel work.</summary>
    private const int Chunk = 512;

    /// <summary>One AdamW update without a clip scale (see the other overload).</summary>
    public static void Step<TFloat>(Span<TFloat> parameter, ReadOnlySpan<TFloat> gradient, Span<TFloat> firstMoment, Span<TFloat> secondMoment,
        in AdamWStepArguments arguments)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat> =>
        Step(parameter, gradient, firstMoment, secondMoment, arguments, TFloat.One);

    /// <summary>One AdamW update of <paramref name="parameter"/> and its moments, in place.</summary>
    /// <param name="parameter">[n] the parameter, updated.</param>
    /// <param name="gradient">[n] its gradient; must not overlap the other spans.</param>
    /// <param name="firstMoment">[n] exp_avg, updated.</param>
    /// <param name="secondMoment">[n] exp_avg_sq, updated.</param>
    /// <param name="arguments">Learning rate, betas, epsilon, weight decay, 1-based step.</param>
    /// <param name="gradientScale">The clip scale the gradient is multiplied by first (1: none).</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An argument is out of range (see <see cref="AdamWStepArguments.Validate"/>).</exception>
    public static unsafe void Step<TFloat>(Span<TFloat> parameter, ReadOnlySpan<TFloat> gradient, Span<TFloat> firstMoment, Span<TFloat> secondMoment,
        in AdamWStepArguments arguments, TFloat gradientScale)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        arguments.Validate();
        int n = parameter.Length;
        CpuKernelSupport.Length(gradient.Length, n, nameof(gradient), "parameter.Length");
        CpuKernelSupport.Length(firstMoment.Length, n, nameof(firstMoment), "parameter.Length");
        CpuKernelSupport.Length(secondMoment.Length, n, nameof(secondMoment), "parameter.Length");
        double lr = arguments.LearningRate;
        TFloat decay = TFloat.CreateChecked(1 - lr * arguments.WeightDecay);
        TFloat beta1 = TFloat.CreateChecked(arguments.Beta1), oneMinusBeta1 = TFloat.CreateChecked(1 - arguments.Beta1);
        TFloat beta2 = TFloat.CreateChecked(arguments.Beta2), oneMinusBeta2 = TFloat.CreateChecked(1 - arguments.Beta2);
        TFloat negativeStepSize = TFloat.CreateChecked(-lr / (1 - Math.Pow(arguments.Beta1, arguments.Step)));
        TFloat correction2Root = TFloat.CreateChecked(Math.Sqrt(1 - Math.Pow(arguments.Beta2, arguments.Step)));
        TFloat epsilon = TFloat.CreateChecked(arguments.Epsilon);
        bool applyDecay = decay != TFloat.One, applyScale = gradientScale != TFloat.One;
        int chunks = (n + Chunk - 1) / Chunk;
        bool parallel = CpuKernelSupport.ShouldParallelize(chunks, 12L * n);
        fixed (TFloat* pp = parameter, pg = gradient, pm = firstMoment, pv = secondMoment)
        {
            TFloat* p0 = pp, g0 = pg, m0 = pm, v0 = pv;
            CpuKernelSupport.For(chunks, parallel, chunk =>
            {
                int start = chunk * Chunk, width = Math.Min(Chunk, n - start);
                var p = new Span<TFloat>(p0 + start, width);
                scoped ReadOnlySpan<TFloat> g = new(g0 + start, width);
                Span<TFloat> scaled = stackalloc TFloat[applyScale ? width : 0];
                if (applyScale)
                {
                    TensorPrimitives.Multiply(g, gradientScale, scaled);
                    g = scaled;
                }
                var m = new Span<TFloat>(m0 + start, width);
                var v = new Span<TFloat>(v0 + start, width);
                Span<TFloat> t = stackalloc TFloat[width];
                if (applyDecay) TensorPrimitives.Multiply<TFloat>(p, decay, p);
                TensorPrimitives.Multiply<TFloat>(g, oneMinusBeta1, t);
                TensorPrimitives.MultiplyAdd<TFloat>(m, beta1, t, m);
                TensorPrimitives.Multiply<TFloat>(g, oneMinusBeta2, t);
                TensorPrimitives.Multiply(t, g, t);
                TensorPrimitives.MultiplyAdd<TFloat>(v, beta2, t, v);
                // t = m / (sqrt(v) / sqrt(bc2) + eps); then p += t * (-lr / bc1)
                TensorPrimitives.Sqrt<TFloat>(v, t);
                TensorPrimitives.Divide<TFloat>(t, correction2Root, t);
                TensorPrimitives.Add<TFloat>(t, epsilon, t);
                TensorPrimitives.Divide(m, t, t);
                TensorPrimitives.MultiplyAdd<TFloat>(t, negativeStepSize, p, p);
            });
        }
    }
}
