// Dropout with a counter-based mask (resid_pdrop on the attention and MLP branches, embd_pdrop, LoRA dropout): the
// mask rule (which element a seed keeps) is DropoutMask's, shared with the CUDA backend; this file is the CPU kernel.
//
//   Forward(x [n], y [n], p, seed)     y_i = keep_i ? x_i / (1 - p) : 0
//   Backward(dy [n], dx [n] =, p, seed) dx_i = keep_i ? dy_i / (1 - p) : 0
//
// The 1/(1-p) scale is computed in double and rounded once to TFloat. Element-wise, so y may be x itself and dx may be dy.
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Determinism;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Dropout;

internal static class CpuDropout
{
    /// <summary><see cref="DropoutOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, double p, ulong seed)
    {
        var y = cpu.Allocate(x.Shape, x.DType);
        if (x.DType == DType.F64) Forward<double>(CpuBackend.Span<double>(x), CpuBackend.Span<double>(y), p, seed);
        else Forward<float>(CpuBackend.Span<float>(x), CpuBackend.Span<float>(y), p, seed);
        return y;
    }

    /// <summary><see cref="DropoutOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor dOutput, Tensor dx, double p, ulong seed)
    {
        if (dx.DType == DType.F64) Backward<double>(CpuBackend.Span<double>(dOutput), CpuBackend.Span<double>(dx), p, seed);
        else Backward<float>(CpuBackend.Span<float>(dOutput), CpuBackend.Span<float>(dx), p, seed);
    }

    /// <summary>Elements per unit of parallel work.</summary>
    private const int Chunk = 4096;

    /// <summary>Zeroes each element with probability p and scales the rest by 1/(1-p).</summary>
    /// <param name="x">[n] input.</param>
    /// <param name="y">[n] output, overwritten; may be the same memory as <paramref name="x"/>.</param>
    /// <param name="p">Drop probability in [0, 1); 0 copies x.</param>
    /// <param name="seed">Mask seed; use a fresh one per call site and step.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static void Forward<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.Length(y.Length, x.Length, nameof(y), "x.Length");
        Apply(x, y, p, seed);
    }

    /// <summary>Gradient of <see cref="Forward"/>: the same mask (recomputed from the seed) and scale.</summary>
    /// <param name="dy">[n] gradient of the output.</param>
    /// <param name="dx">[n] overwritten; may be the same memory as <paramref name="dy"/>.</param>
    /// <param name="p">The forward call's p.</param>
    /// <param name="seed">The forward call's seed.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static void Backward<TFloat>(ReadOnlySpan<TFloat> dy, Span<TFloat> dx, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.Length(dx.Length, dy.Length, nameof(dx), "dy.Length");
        Apply(dy, dx, p, seed);
    }

    private static unsafe void Apply<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        uint threshold = DropoutMask.KeepThreshold(p); // also validates p
        if (p == 0)
        {
            x.CopyTo(y);
            return;
        }
        TFloat scale = TFloat.CreateChecked(1.0 / (1.0 - p));
        int n = x.Length, chunks = (n + Chunk - 1) / Chunk;
        bool parallel = CpuKernelSupport.ShouldParallelize(chunks, 8L * n);
        fixed (TFloat* px = x, py = y)
        {
            TFloat* xp = px, yp = py;
            CpuKernelSupport.For(chunks, parallel, chunk =>
            {
                int start = chunk * Chunk, end = Math.Min(n, start + Chunk);
                for (int i = start; i < end; i++)
                    yp[i] = DropoutMask.Draw(seed, i) >= threshold ? xp[i] * scale : TFloat.Zero;
            });
        }
    }
}
