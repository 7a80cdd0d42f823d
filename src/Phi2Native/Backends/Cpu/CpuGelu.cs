// gelu_new, the tanh approximation of GELU that Phi-2's MLP uses (hidden_act = "gelu_new"):
//
//   Forward(x [n], y [n])            y = 0.5 x (1 + tanh(u)),  u = c (x + a x^3),  c = sqrt(2/pi), a = 0.044715
//   Backward(dy [n], x [n], dx [n] =)
//       dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) c (1 + 3 a x^2)   (exact, not an approximation)
//
// Backward needs the input x saved (not y). Element-wise, so y may be x itself and dx may be dy.
using System.Numerics;
using System.Numerics.Tensors;

namespace Phi2Native.Backends.Cpu;

internal static class CpuGelu
{
    /// <summary>Elements per stack scratch chunk, and per unit of parallel work.</summary>
    private const int Chunk = 512;

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
        int n = x.Length, chunks = (n + Chunk - 1) / Chunk;
        TFloat c = TFloat.CreateChecked(SqrtTwoOverPi), ca = TFloat.CreateChecked(SqrtTwoOverPi * Coefficient);
        TFloat half = TFloat.CreateChecked(0.5);
        bool parallel = CpuKernelSupport.ShouldParallelize(chunks, 8L * n);
        fixed (TFloat* px = x, py = y)
        {
            TFloat* xp = px, yp = py;
            CpuKernelSupport.For(chunks, parallel, chunk =>
            {
                int start = chunk * Chunk, width = Math.Min(Chunk, n - start);
                var xc = new ReadOnlySpan<TFloat>(xp + start, width);
                var yc = new Span<TFloat>(yp + start, width);
                Span<TFloat> t = stackalloc TFloat[width];
                // u = x (c + c a x^2), built in scratch so that x is still intact for the last step.
                TensorPrimitives.Multiply(xc, xc, t);
                TensorPrimitives.Multiply<TFloat>(t, ca, t);
                TensorPrimitives.Add<TFloat>(t, c, t);
                TensorPrimitives.Multiply(t, xc, t);
                TensorPrimitives.Tanh<TFloat>(t, t);
                TensorPrimitives.Add<TFloat>(t, TFloat.One, t);
                TensorPrimitives.Multiply(t, xc, yc);
                TensorPrimitives.Multiply<TFloat>(yc, half, yc);
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
        int n = x.Length, chunks = (n + Chunk - 1) / Chunk;
        TFloat c = TFloat.CreateChecked(SqrtTwoOverPi), ca = TFloat.CreateChecked(SqrtTwoOverPi * Coefficient);
        TFloat ca3 = TFloat.CreateChecked(3 * SqrtTwoOverPi * Coefficient), half = TFloat.CreateChecked(0.5);
        bool parallel = CpuKernelSupport.ShouldParallelize(chunks, 16L * n);
        fixed (TFloat* pdy = dy, px = x, pdx = dx)
        {
            TFloat* dyp = pdy, xp = px, dxp = pdx;
            CpuKernelSupport.For(chunks, parallel, chunk =>
            {
                int start = chunk * Chunk, width = Math.Min(Chunk, n - start);
                var xc = new ReadOnlySpan<TFloat>(xp + start, width);
                Span<TFloat> scratch = stackalloc TFloat[3 * width];
                Span<TFloat> x2 = scratch[..width], th = scratch.Slice(width, width), g = scratch.Slice(2 * width, width);
                TensorPrimitives.Multiply(xc, xc, x2);
                // th = tanh(x (c + c a x^2))
                TensorPrimitives.Multiply<TFloat>(x2, ca, th);
                TensorPrimitives.Add<TFloat>(th, c, th);
                TensorPrimitives.Multiply(th, xc, th);
                TensorPrimitives.Tanh<TFloat>(th, th);
                // du/dx = c + 3 c a x^2, into x2 (x^2 is not needed after this)
                TensorPrimitives.Multiply<TFloat>(x2, ca3, x2);
                TensorPrimitives.Add<TFloat>(x2, c, x2);
                // g = (1 - th^2) du/dx x + (1 + th), then dx = 0.5 g dy
                TensorPrimitives.Multiply(th, th, g);
                TensorPrimitives.Subtract<TFloat>(TFloat.One, g, g);
                TensorPrimitives.Multiply(g, x2, g);
                TensorPrimitives.Multiply(g, xc, g);
                TensorPrimitives.Add(g, th, g);
                TensorPrimitives.Add<TFloat>(g, TFloat.One, g);
                TensorPrimitives.Multiply<TFloat>(g, half, g);
                var dxc = new Span<TFloat>(dxp + start, width);
                TensorPrimitives.Multiply(g, new ReadOnlySpan<TFloat>(dyp + start, width), dxc);
            });
        }
    }
}
