// The parallel block sum on the CPU: y_i = (keep_a,i ? a_i * s : 0) + (keep_m,i ? m_i * s : 0) + h_i, s = 1 / (1 - p)
// rounded once to TFloat, keep from DropoutMask with each branch's seed: the unfused dropouts and adds' arithmetic,
// element by element, so the two paths agree bit for bit.
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Determinism;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Residual;

internal static class CpuParallelResidual
{
    private const int Chunk = 4096;

    /// <summary><see cref="ParallelResidualOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor attention, Tensor mlp, Tensor hidden, double p, ulong seedA, ulong seedM)
    {
        var y = cpu.Allocate(hidden.Shape, hidden.DType);
        if (hidden.DType == DType.F64)
            Forward(CpuBackend.Span<double>(attention), CpuBackend.Span<double>(mlp), CpuBackend.Span<double>(hidden), CpuBackend.Span<double>(y), p, seedA, seedM);
        else
            Forward(CpuBackend.Span<float>(attention), CpuBackend.Span<float>(mlp), CpuBackend.Span<float>(hidden), CpuBackend.Span<float>(y), p, seedA, seedM);
        return y;
    }

    /// <summary><see cref="ParallelResidualOp.Backward(Tensor, Tensor?, Tensor?, double, ulong, ulong)"/> on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor dOutput, Tensor? dAttention, Tensor? dMlp, double p, ulong seedA, ulong seedM)
    {
        foreach (var (gradient, seed) in new[] { (dAttention, seedA), (dMlp, seedM) })
        {
            if (gradient is null) continue;
            if (dOutput.DType == DType.F64) Mask(CpuBackend.Span<double>(dOutput), CpuBackend.Span<double>(gradient), p, seed);
            else Mask(CpuBackend.Span<float>(dOutput), CpuBackend.Span<float>(gradient), p, seed);
        }
    }

    private static unsafe void Forward<TFloat>(ReadOnlySpan<TFloat> a, ReadOnlySpan<TFloat> m, ReadOnlySpan<TFloat> h, Span<TFloat> y, double p, ulong seedA, ulong seedM)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        uint threshold = DropoutMask.KeepThreshold(p);
        TFloat scale = TFloat.CreateChecked(1.0 / (1.0 - p));
        int n = y.Length, chunks = (n + Chunk - 1) / Chunk;
        fixed (TFloat* pa = a, pm = m, ph = h, py = y)
        {
            TFloat* ap = pa, mp = pm, hp = ph, yp = py;
            CpuKernelSupport.For(chunks, CpuKernelSupport.ShouldParallelize(chunks, 16L * n), chunk =>
            {
                for (int i = chunk * Chunk, end = Math.Min(n, i + Chunk); i < end; i++)
                {
                    TFloat da = DropoutMask.Draw(seedA, i) >= threshold ? ap[i] * scale : TFloat.Zero;
                    TFloat dm = DropoutMask.Draw(seedM, i) >= threshold ? mp[i] * scale : TFloat.Zero;
                    yp[i] = da + dm + hp[i];
                }
            });
        }
    }

    private static unsafe void Mask<TFloat>(ReadOnlySpan<TFloat> dy, Span<TFloat> dx, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        uint threshold = DropoutMask.KeepThreshold(p);
        TFloat scale = TFloat.CreateChecked(1.0 / (1.0 - p));
        int n = dx.Length, chunks = (n + Chunk - 1) / Chunk;
        fixed (TFloat* pdy = dy, pdx = dx)
        {
            TFloat* dyp = pdy, dxp = pdx;
            CpuKernelSupport.For(chunks, CpuKernelSupport.ShouldParallelize(chunks, 8L * n), chunk =>
            {
                for (int i = chunk * Chunk, end = Math.Min(n, i + Chunk); i < end; i++)
                    dxp[i] = DropoutMask.Draw(seed, i) >= threshold ? dyp[i] * scale : TFloat.Zero;
            });
        }
    }
}
