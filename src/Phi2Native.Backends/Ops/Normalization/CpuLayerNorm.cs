// LayerNorm over the last dim (input_layernorm, final_layernorm), torch.nn.LayerNorm semantics:
// biased variance, eps inside the square root.
//
//   Forward(x [N,C], weight [C], bias [C], eps, y [N,C], mean [N], rstd [N])
//       y = (x - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps)
//   Backward(dy [N,C], x [N,C], weight [C], mean [N], rstd [N], dx [N,C] = (or +=), dWeight [C] +=, dBias [C] +=)
//
// Backward needs x, weight and the per-row mean and rstd saved by Forward (not y): xhat is rebuilt as
// (x - mean) * rstd, which costs less than keeping a second [N,C] tensor alive.
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Normalization;

internal static class CpuLayerNorm
{
    /// <summary><see cref="LayerNormOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, Tensor weight, Tensor bias, double eps, int rows, int channels,
        out Tensor mean, out Tensor rstd)
    {
        var y = cpu.Allocate(x.Shape, x.DType);
        mean = cpu.Allocate([rows], x.DType);
        rstd = cpu.Allocate([rows], x.DType);
        if (x.DType == DType.F64)
            Forward(CpuBackend.Span<double>(x), CpuBackend.Span<double>(weight), CpuBackend.Span<double>(bias), eps, CpuBackend.Span<double>(y),
                CpuBackend.Span<double>(mean), CpuBackend.Span<double>(rstd), rows, channels);
        else
            Forward(CpuBackend.Span<float>(x), CpuBackend.Span<float>(weight), CpuBackend.Span<float>(bias), eps, CpuBackend.Span<float>(y),
                CpuBackend.Span<float>(mean), CpuBackend.Span<float>(rstd), rows, channels);
        return y;
    }

    /// <summary><see cref="LayerNormOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(CpuBackend cpu, Tensor dOutput, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx, Tensor? dWeight,
        Tensor? dBias, int rows, int channels, bool accumulateDx)
    {
        if (accumulateDx && dx is not null)
        {
            // dx += the fresh gradient: bit for bit the fresh gradient delivered and added (dx doubles as scratch below).
            using var fresh = cpu.Empty(dx.Shape, dx.DType);
            Backward(cpu, dOutput, x, weight, mean, rstd, fresh, dWeight, dBias, rows, channels, accumulateDx: false);
            cpu.AddInPlace(dx, fresh);
            return;
        }
        if (x.DType == DType.F64)
            Backward(CpuBackend.Span<double>(dOutput), CpuBackend.Span<double>(x), CpuBackend.Span<double>(weight), CpuBackend.Span<double>(mean),
                CpuBackend.Span<double>(rstd), CpuBackend.Optional<double>(dx), CpuBackend.Optional<double>(dWeight), CpuBackend.Optional<double>(dBias), rows, channels);
        else
            Backward(CpuBackend.Span<float>(dOutput), CpuBackend.Span<float>(x), CpuBackend.Span<float>(weight), CpuBackend.Span<float>(mean),
                CpuBackend.Span<float>(rstd), CpuBackend.Optional<float>(dx), CpuBackend.Optional<float>(dWeight), CpuBackend.Optional<float>(dBias), rows, channels);
    }

    /// <summary>Channels per stack scratch chunk (and per thread in the parameter gradients).</summary>
    private const int ScratchChunk = 256;

    /// <summary>Normalizes each row of <paramref name="x"/> and applies the affine weight and bias.</summary>
    /// <param name="x">[N, C] input.</param>
    /// <param name="weight">[C] scale (gamma).</param>
    /// <param name="bias">[C] shift (beta).</param>
    /// <param name="eps">Added to the biased variance (layer_norm_eps, 1e-5 for Phi-2).</param>
    /// <param name="y">[N, C] output (overwritten). Must not alias <paramref name="x"/>.</param>
    /// <param name="mean">[N] row means, saved for backward.</param>
    /// <param name="rstd">[N] row 1/sqrt(var + eps), saved for backward.</param>
    /// <param name="rows">N.</param>
    /// <param name="channels">C (&gt; 0).</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is out of range, or eps is negative or NaN.</exception>
    public static unsafe void Forward<TFloat>(ReadOnlySpan<TFloat> x, ReadOnlySpan<TFloat> weight, ReadOnlySpan<TFloat> bias,
        double eps, Span<TFloat> y, Span<TFloat> mean, Span<TFloat> rstd, int rows, int channels)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.NonNegative(rows, nameof(rows));
        CpuKernelSupport.Positive(channels, nameof(channels));
        if (!(eps >= 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be >= 0.");
        long size = (long)rows * channels;
        CpuKernelSupport.Length(x.Length, size, nameof(x), "[N, C]");
        CpuKernelSupport.Length(weight.Length, channels, nameof(weight), "[C]");
        CpuKernelSupport.Length(bias.Length, channels, nameof(bias), "[C]");
        CpuKernelSupport.Length(y.Length, size, nameof(y), "[N, C]");
        CpuKernelSupport.Length(mean.Length, rows, nameof(mean), "[N]");
        CpuKernelSupport.Length(rstd.Length, rows, nameof(rstd), "[N]");

        bool parallel = CpuKernelSupport.ShouldParallelize(rows, size);
        fixed (TFloat* px = x, pw = weight, pb = bias, py = y, pm = mean, pr = rstd)
        {
            TFloat* xp = px, wp = pw, bp = pb, yp = py, mp = pm, rp = pr;
            CpuKernelSupport.For(rows, parallel, r =>
            {
                long offset = (long)r * channels;
                var xr = new ReadOnlySpan<TFloat>(xp + offset, channels);
                var yr = new Span<TFloat>(yp + offset, channels);
                TFloat n = TFloat.CreateChecked(channels);
                TFloat mu = TensorPrimitives.Sum(xr) / n;
                // Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2, which
                // cancels badly when |mean| >> std. y serves as the scratch for x - mean.
                TensorPrimitives.Subtract(xr, mu, yr);
                double variance = double.CreateChecked(TensorPrimitives.SumOfSquares<TFloat>(yr)) / channels;
                TFloat rs = TFloat.CreateChecked(1.0 / Math.Sqrt(variance + eps));
                TensorPrimitives.Multiply<TFloat>(yr, rs, yr);
                TensorPrimitives.MultiplyAdd<TFloat>(yr, new ReadOnlySpan<TFloat>(wp, channels),
                    new ReadOnlySpan<TFloat>(bp, channels), yr);
                mp[r] = mu;
                rp[r] = rs;
            });
        }
    }

    /// <summary>Gradients of <see cref="Forward"/>. With xhat = (x - mean) * rstd and g = dy * weight:
    /// <c>dx = rstd * (g - mean(g) - xhat * mean(g * xhat))</c>, <c>dWeight += sum_rows dy * xhat</c>,
    /// <c>dBias += sum_rows dy</c>.</summary>
    /// <param name="dy">[N, C] gradient of the output.</param>
    /// <param name="x">[N, C] the forward input.</param>
    /// <param name="weight">[C] the forward weight.</param>
    /// <param name="mean">[N] saved by Forward.</param>
    /// <param name="rstd">[N] saved by Forward.</param>
    /// <param name="dx">[N, C] input gradient, overwritten; empty when not needed.</param>
    /// <param name="dWeight">[C] accumulated (+=); empty when not needed (frozen weight).</param>
    /// <param name="dBias">[C] accumulated (+=); empty when not needed.</param>
    /// <param name="rows">N.</param>
    /// <param name="channels">C (&gt; 0).</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is out of range.</exception>
    public static unsafe void Backward<TFloat>(ReadOnlySpan<TFloat> dy, ReadOnlySpan<TFloat> x, ReadOnlySpan<TFloat> weight,
        ReadOnlySpan<TFloat> mean, ReadOnlySpan<TFloat> rstd, Span<TFloat> dx, Span<TFloat> dWeight, Span<TFloat> dBias,
        int rows, int channels)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.NonNegative(rows, nameof(rows));
        CpuKernelSupport.Positive(channels, nameof(channels));
        long size = (long)rows * channels;
        CpuKernelSupport.Length(dy.Length, size, nameof(dy), "[N, C]");
        CpuKernelSupport.Length(x.Length, size, nameof(x), "[N, C]");
        CpuKernelSupport.Length(weight.Length, channels, nameof(weight), "[C]");
        CpuKernelSupport.Length(mean.Length, rows, nameof(mean), "[N]");
        CpuKernelSupport.Length(rstd.Length, rows, nameof(rstd), "[N]");
        bool wantDx = CpuKernelSupport.OptionalLength(dx.Length, size, nameof(dx), "[N, C]");
        bool wantDWeight = CpuKernelSupport.OptionalLength(dWeight.Length, channels, nameof(dWeight), "[C]");
        bool wantDBias = CpuKernelSupport.OptionalLength(dBias.Length, channels, nameof(dBias), "[C]");
        if (rows == 0) return;

        fixed (TFloat* pdy = dy, px = x, pw = weight, pm = mean, pr = rstd, pdx = dx, pdw = dWeight, pdb = dBias)
        {
            TFloat* dyp = pdy, xp = px, wp = pw, mp = pm, rp = pr, dxp = pdx, dwp = pdw, dbp = pdb;
            if (wantDx)
            {
                bool parallel = CpuKernelSupport.ShouldParallelize(rows, 4 * size);
                CpuKernelSupport.For(rows, parallel, r =>
                {
                    long offset = (long)r * channels;
                    var dyr = new ReadOnlySpan<TFloat>(dyp + offset, channels);
                    var xr = new ReadOnlySpan<TFloat>(xp + offset, channels);
                    var dxr = new Span<TFloat>(dxp + offset, channels);
                    TFloat mu = mp[r], rs = rp[r];
                    TFloat n = TFloat.CreateChecked(channels);
                    Span<TFloat> centered = stackalloc TFloat[Math.Min(channels, ScratchChunk)];
                    // dx doubles as scratch for g = dy * w. (x - mean) is formed explicitly, chunk by
                    // chunk, instead of expanding it into x - mean terms that cancel when |mean| >> std.
                    TensorPrimitives.Multiply(dyr, new ReadOnlySpan<TFloat>(wp, channels), dxr);
                    TFloat meanG = TensorPrimitives.Sum<TFloat>(dxr) / n;
                    TFloat gDotCentered = TFloat.Zero;
                    for (int c0 = 0; c0 < channels; c0 += centered.Length)
                    {
                        int w = Math.Min(centered.Length, channels - c0);
                        TensorPrimitives.Subtract(xr.Slice(c0, w), mu, centered[..w]);
                        gDotCentered += TensorPrimitives.Dot<TFloat>(dxr.Slice(c0, w), centered[..w]);
                    }
                    TFloat meanGXhat = rs * gDotCentered / n;
                    // dx = rstd * (g - meanG) - (rstd^2 * meanGXhat) * (x - mean)
                    TFloat a = rs * rs * meanGXhat;
                    TensorPrimitives.Multiply<TFloat>(dxr, rs, dxr);
                    TensorPrimitives.Add<TFloat>(dxr, -rs * meanG, dxr);
                    for (int c0 = 0; c0 < channels; c0 += centered.Length)
                    {
                        int w = Math.Min(centered.Length, channels - c0);
                        TensorPrimitives.Subtract(xr.Slice(c0, w), mu, centered[..w]);
                        var dxc = dxr.Slice(c0, w);
                        TensorPrimitives.MultiplyAdd(centered[..w], -a, dxc, dxc);
                    }
                });
            }
            if (wantDWeight || wantDBias)
            {
                // Threads split the channels so each parameter gradient element sums its rows in
                // order 0..N-1 on one thread: deterministic, and no per-thread partial buffers.
                const int blockChannels = ScratchChunk;
                int blocks = (channels + blockChannels - 1) / blockChannels;
                bool parallel = CpuKernelSupport.ShouldParallelize(blocks, 3 * size);
                CpuKernelSupport.For(blocks, parallel, block =>
                {
                    int c0 = block * blockChannels, width = Math.Min(blockChannels, channels - c0);
                    Span<TFloat> xhat = stackalloc TFloat[width];
                    for (int r = 0; r < rows; r++)
                    {
                        long offset = (long)r * channels + c0;
                        var dyr = new ReadOnlySpan<TFloat>(dyp + offset, width);
                        if (wantDBias)
                        {
                            var db = new Span<TFloat>(dbp + c0, width);
                            TensorPrimitives.Add(db, dyr, db);
                        }
                        if (wantDWeight)
                        {
                            var dw = new Span<TFloat>(dwp + c0, width);
                            TensorPrimitives.Subtract(new ReadOnlySpan<TFloat>(xp + offset, width), mp[r], xhat);
                            TensorPrimitives.Multiply<TFloat>(xhat, rp[r], xhat);
                            TensorPrimitives.MultiplyAdd(dyr, xhat, dw, dw);
                        }
                    }
                });
            }
        }
    }
}
