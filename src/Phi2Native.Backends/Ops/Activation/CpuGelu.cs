// gelu_new, the tanh approximation of GELU that Phi-2's MLP uses (hidden_act = "gelu_new"):
//
//   Forward(x [n], y [n])            y = 0.5 x (1 + tanh(u)),  u = c (x + a x^3),  c = sqrt(2/pi), a = 0.044715
//   Backward(dy [n], x [n], dx [n] =)
//       dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) c (1 + 3 a x^2)   (exact, not an approximation)
//             = 0.5 (1 + tanh u) (1 + (1 - tanh u) x u'),  u' = c + 3 c a x^2   (the form computed)
//
// Backward needs the input x saved (not y). Element-wise, so y may be x itself and dx may be dy.
//
// Vectorized as whole-span TensorPrimitives passes over chunks of Chunk elements, whose scratch lives
// on the stack and stays in L1 between passes (forward 6 passes, backward 12; tanh is most of the
// cost). Threads take TaskChunks chunks at a time, so that a parallel work item is tens of
// microseconds, far above the hand-off cost.
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Activation;

internal static class CpuGelu
{
    /// <summary><see cref="GeluNewOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x)
    {
        var y = cpu.Allocate(x.Shape, x.DType);
        if (x.DType == DType.F64) Forward<double>(CpuBackend.Span<double>(x), CpuBackend.Span<double>(y));
        else Forward<float>(CpuBackend.Span<float>(x), CpuBackend.Span<float>(y));
        return y;
    }

    /// <summary><see cref="GeluNewOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor dOutput, Tensor x, Tensor dx)
    {
        if (x.DType == DType.F64) Backward<double>(CpuBackend.Span<double>(dOutput), CpuBackend.Span<double>(x), CpuBackend.Span<double>(dx));
        else Backward<float>(CpuBackend.Span<float>(dOutput), CpuBackend.Span<float>(x), CpuBackend.Span<float>(dx));
    }

    /// <summary>Elements per pass: 1024 floats (4 KB) or doubles (8 KB) per scratch span, L1-resident.</summary>
    private const int Chunk = 1024;

    /// <summary>Chunks per parallel work item (16K elements, ~20 us of one core).</summary>
    private const int TaskChunks = 16;

    private const double Coefficient = 0.044715;
    private static readonly double SqrtTwoOverPi = Math.Sqrt(2.0 / Math.PI);

    /// <summary><c>y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>, element-wise.</summary>
    /// <param name="x">[n] input (fc1's output).</param>
    /// <param name="y">[n] output, overwritten; may be the same memory as <paramref name="x"/>.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static unsafe void Forward<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.Length(y.Length, x.Length, nameof(y), "x.Length");
        int n = x.Length, tasks = TaskCount(n);
        TFloat c = TFloat.CreateChecked(SqrtTwoOverPi), ca = TFloat.CreateChecked(SqrtTwoOverPi * Coefficient);
        TFloat half = TFloat.CreateChecked(0.5);
        bool parallel = CpuKernelSupport.ShouldParallelize(tasks, 8L * n);
        fixed (TFloat* px = x, py = y)
        {
            TFloat* xp = px, yp = py;
            CpuKernelSupport.For(tasks, parallel, task =>
            {
                Span<TFloat> t = stackalloc TFloat[Chunk];
                int end = Math.Min(n, (task + 1) * TaskChunks * Chunk);
                for (int start = task * TaskChunks * Chunk; start < end; start += Chunk)
                {
                    int width = Math.Min(Chunk, end - start);
                    var xc = new ReadOnlySpan<TFloat>(xp + start, width);
                    var yc = new Span<TFloat>(yp + start, width);
                    Span<TFloat> u = t[..width];
                    // u = x (c + c a x^2), in scratch: y may be x, which is still needed below.
                    TensorPrimitives.Multiply(xc, ca, u);
                    TensorPrimitives.MultiplyAdd(u, xc, c, u);
                    TensorPrimitives.Multiply(u, xc, u);
                    TensorPrimitives.Tanh<TFloat>(u, u);
                    // y = 0.5 x + 0.5 x tanh u. The first pass is the last to read x (element by element, in place if y is x).
                    TensorPrimitives.Multiply(xc, half, yc);
                    TensorPrimitives.MultiplyAdd<TFloat>(u, yc, yc, yc);
                }
            });
        }
    }

    /// <summary>Input gradient of <see cref="Forward"/>: <c>dx = dy * gelu_new'(x)</c>.</summary>
    /// <param name="dy">[n] gradient of the output.</param>
    /// <param name="x">[n] the forward input.</param>
    /// <param name="dx">[n] overwritten; may be the same memory as <paramref name="dy"/> (not as <paramref name="x"/>).</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    public static unsafe void Backward<TFloat>(ReadOnlySpan<TFloat> dy, ReadOnlySpan<TFloat> x, Span<TFloat> dx)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.Length(dy.Length, x.Length, nameof(dy), "x.Length");
        CpuKernelSupport.Length(dx.Length, x.Length, nameof(dx), "x.Length");
        int n = x.Length, tasks = TaskCount(n);
        TFloat c = TFloat.CreateChecked(SqrtTwoOverPi), ca = TFloat.CreateChecked(SqrtTwoOverPi * Coefficient);
        TFloat ca3 = TFloat.CreateChecked(3 * SqrtTwoOverPi * Coefficient), half = TFloat.CreateChecked(0.5);
        bool parallel = CpuKernelSupport.ShouldParallelize(tasks, 16L * n);
        fixed (TFloat* pdy = dy, px = x, pdx = dx)
        {
            TFloat* dyp = pdy, xp = px, dxp = pdx;
            CpuKernelSupport.For(tasks, parallel, task =>
            {
                Span<TFloat> scratch = stackalloc TFloat[3 * Chunk];
                int end = Math.Min(n, (task + 1) * TaskChunks * Chunk);
                for (int start = task * TaskChunks * Chunk; start < end; start += Chunk)
                {
                    int width = Math.Min(Chunk, end - start);
                    var xc = new ReadOnlySpan<TFloat>(xp + start, width);
                    Span<TFloat> th = scratch[..width], w = scratch.Slice(Chunk, width), g = scratch.Slice(2 * Chunk, width);
                    // th = tanh(x (c + c a x^2))
                    TensorPrimitives.Multiply(xc, ca, th);
                    TensorPrimitives.MultiplyAdd(th, xc, c, th);
                    TensorPrimitives.Multiply(th, xc, th);
                    TensorPrimitives.Tanh<TFloat>(th, th);
                    // w = x u' = x (c + 3 c a x^2)
                    TensorPrimitives.Multiply(xc, ca3, w);
                    TensorPrimitives.MultiplyAdd(w, xc, c, w);
                    TensorPrimitives.Multiply(w, xc, w);
                    // g = (1 + th) (1 + (1 - th) w), then dx = 0.5 g dy (dx may be dy: read and written in the same pass).
                    TensorPrimitives.Subtract(TFloat.One, th, g);
                    TensorPrimitives.MultiplyAdd(g, w, TFloat.One, g);
                    TensorPrimitives.MultiplyAdd<TFloat>(th, g, g, g);
                    TensorPrimitives.Multiply(g, half, g);
                    TensorPrimitives.Multiply(g, new ReadOnlySpan<TFloat>(dyp + start, width), new Span<TFloat>(dxp + start, width));
                }
            });
        }
    }

    /// <summary>Parallel work items of TaskChunks x Chunk elements covering n.</summary>
    private static int TaskCount(int n) => (int)(((long)n + TaskChunks * Chunk - 1) / (TaskChunks * Chunk));
}
