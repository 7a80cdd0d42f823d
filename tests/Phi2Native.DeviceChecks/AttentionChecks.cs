using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/attention.cu through <see cref="AttentionKernels"/>, against the CPU backend's attention and its backward
/// (<see cref="CpuAttention"/>) on the same widened values: Tq == Tk and Tq &lt; Tk (the KV-cache offset), T not a
/// multiple of the 32-row tile and spanning several tiles, Phi-2's D = 80, an odd small D (7) and the largest D (128), B
/// and H above 1, large scores (the running max moves across key tiles), f32 and bf16, and backward with each gradient
/// alone (the others null); attention through a KV cache is <see cref="CachedAttentionChecks"/>'. Backward gets the CPU
/// forward's output (rounded to the dtype) and logSumExp on both sides, so it is checked on its own. The forward of a
/// 16-bit dtype with D a multiple of 16 runs kernels/attention_mma.cu (tensor cores, attention_mma_{dtype}_d{bound};
/// <see cref="AttentionKernels.Choose"/>): its checks pair D in {16, 32, 64, 80, 96, 128} with Tq and Tk in
/// {1, 15, 16, 17, 64, 127, 129, 300} (Tq &lt; Tk among them), B above 1, bf16 and f16. Tolerances:
/// <see cref="Tolerances.Forward"/> for the output and logSumExp (<see cref="Tolerances.AttentionTensorCoreOutput"/> for
/// the tensor-core output), <see cref="Tolerances.Gradient"/> for dq, dk and dv (<see cref="Tolerances.AttentionTensorCoreGradient"/>
/// for the tensor-core backward's, each with its own bound). The backward of a 16-bit dtype with D a multiple of 16 runs
/// kernels/attention_mma_backward.cu (<see cref="AttentionKernels.BackwardUsesTensorCores"/>), checked over the same D, Tq
/// and Tk, bf16 and f16, each gradient alone and together.
/// </summary>
public static class AttentionChecks
{
    private sealed record Shape(int B, int Tq, int Tk, int H, int D)
    {
        public override string ToString() => $"B {B} Tq {Tq} Tk {Tk} H {H} D {D}";
        public int QueryCount => B * Tq * H * D;
        public int KeyCount => B * Tk * H * D;
    }

    [Flags]
    private enum Wanted
    {
        Dq = 1,
        Dk = 2,
        Dv = 4,
        All = Dq | Dk | Dv,
    }

    private static readonly Shape Phi2 = new(2, 37, 37, 2, 80);

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Forward(DType.F32, Phi2),
        Forward(DType.F32, new(1, 70, 70, 3, 80)),
        Forward(DType.F32, new(2, 20, 70, 2, 80)),
        Forward(DType.F32, new(2, 1, 45, 3, 80)),
        Forward(DType.F32, new(2, 33, 33, 3, 7)),
        Forward(DType.F32, new(1, 40, 40, 2, 128)),
        Forward(DType.F32, new(1, 50, 66, 2, 80), scale: 4f),
        Forward(DType.BF16, new(2, 45, 45, 2, 80)),
        Forward(DType.BF16, new(2, 13, 64, 2, 7)),
        Forward(DType.BF16, new(2, 17, 17, 2, 80)),
        Forward(DType.F16, new(1, 129, 129, 1, 64)),
        Forward(DType.BF16, new(1, 300, 300, 1, 16)),
        Forward(DType.BF16, new(2, 15, 127, 1, 128)),
        Forward(DType.F16, new(2, 64, 64, 2, 32)),
        Forward(DType.BF16, new(1, 1, 129, 2, 96)),
        Forward(DType.F16, new(1, 16, 300, 1, 80)),
        Forward(DType.BF16, new(3, 127, 129, 1, 32)),
        Forward(DType.F16, new(1, 1, 1, 1, 128)),
        Forward(DType.F16, new(2, 300, 300, 1, 96)),
        Forward(DType.BF16, new(1, 64, 64, 1, 80), scale: 4f),
        Forward(DType.BF16, new(2, 15, 16, 2, 64)),
        Backward(DType.F32, Phi2, Wanted.All),
        Backward(DType.F32, new(1, 20, 70, 2, 80), Wanted.All),
        Backward(DType.F32, new(1, 70, 70, 2, 80), Wanted.All),
        Backward(DType.F32, new(2, 33, 33, 3, 7), Wanted.All),
        Backward(DType.F32, new(1, 40, 40, 2, 128), Wanted.All),
        Backward(DType.F32, new(1, 45, 60, 2, 80), Wanted.All, scale: 4f),
        Backward(DType.F32, new(2, 40, 40, 2, 80), Wanted.Dq),
        Backward(DType.F32, new(2, 40, 40, 2, 80), Wanted.Dk),
        Backward(DType.F32, new(2, 40, 40, 2, 80), Wanted.Dv),
        Backward(DType.F32, new(2, 40, 40, 2, 80), Wanted.Dk | Wanted.Dv),
        Backward(DType.BF16, new(2, 45, 45, 2, 80), Wanted.All),
        Backward(DType.BF16, new(1, 10, 50, 2, 80), Wanted.Dk | Wanted.Dv),
        Backward(DType.BF16, new(2, 33, 33, 3, 7), Wanted.All),
        Backward(DType.BF16, new(2, 17, 17, 2, 80), Wanted.All),
        Backward(DType.F16, new(1, 129, 129, 1, 64), Wanted.All),
        Backward(DType.BF16, new(1, 300, 300, 1, 16), Wanted.All),
        Backward(DType.BF16, new(2, 15, 127, 1, 128), Wanted.All),
        Backward(DType.F16, new(2, 64, 64, 2, 32), Wanted.Dq),
        Backward(DType.BF16, new(1, 1, 129, 2, 96), Wanted.Dk),
        Backward(DType.F16, new(1, 16, 300, 1, 80), Wanted.Dv),
        Backward(DType.BF16, new(3, 127, 129, 1, 32), Wanted.All),
        Backward(DType.F16, new(1, 1, 1, 1, 128), Wanted.All),
        Backward(DType.F16, new(1, 64, 300, 1, 96), Wanted.Dk | Wanted.Dv),
        Backward(DType.BF16, new(1, 64, 64, 1, 80), Wanted.All, scale: 4f),
        Backward(DType.BF16, new(2, 15, 16, 2, 64), Wanted.Dq),
        Backward(DType.F16, new(2, 16, 17, 2, 112), Wanted.All),
        Backward(DType.BF16, new(1, 127, 127, 1, 48), Wanted.Dq | Wanted.Dv),
        Backward(DType.F16, new(2, 300, 300, 1, 96), Wanted.All),
        Backward(DType.BF16, new(2, 70, 70, 2, 80), Wanted.All, twice: true),
    ];

    /// <summary>Whether <see cref="AttentionKernels.Attention"/> runs the tensor-core kernel on these (16-byte aligned) buffers.</summary>
    private static bool TensorCores(DType dtype, Shape s) => AttentionKernels.UsesTensorCores(dtype, s.D, default, default, default);

    private static DeviceCheck Forward(DType dtype, Shape s, float scale = 1.5f)
    {
        string kernel = AttentionKernels.Choose(dtype, s.Tq, s.Tk, s.D, cached: false, default, default, default).Kernel(dtype, cached: false);
        return new($"{kernel} {s}{(scale != 1.5f ? $" inputs x{scale}" : "")}", [kernel], device => RunForward(device, dtype, s, scale));
    }

    /// <summary>Whether <see cref="AttentionKernels.AttentionBackward"/> runs the tensor-core kernel on these (16-byte aligned) buffers.</summary>
    private static bool BackwardTensorCores(DType dtype, Shape s) => AttentionKernels.BackwardUsesTensorCores(dtype, s.D, default, default, default, default);

    /// <summary>
    /// Backward against the CPU; with <paramref name="twice"/>, also run again over gradient buffers refilled with other bytes,
    /// and the second run's bytes must equal the first's (deterministic: no atomics, a fixed order of every sum).
    /// </summary>
    private static DeviceCheck Backward(DType dtype, Shape s, Wanted wanted, float scale = 1.5f, bool twice = false)
    {
        string suffix = KernelName.Suffix(dtype);
        string what = wanted == Wanted.All ? "all gradients" : string.Join(" and ", Enum.GetValues<Wanted>().Where(w => w != Wanted.All && wanted.HasFlag(w)).Select(w => w.ToString().ToLowerInvariant())) + " only";
        string kernel = BackwardTensorCores(dtype, s) ? AttentionKernels.TensorCoreBackwardKernel(dtype, s.D) : $"attention_backward_{suffix}";
        string[] kernels = (wanted & (Wanted.Dq | Wanted.Dk)) != 0 ? [$"attention_backward_delta_{suffix}", kernel] : [kernel];
        return new($"{kernel} {s} {what}{(scale != 1.5f ? $" inputs x{scale}" : "")}{(twice ? ", run twice: bitwise equal" : "")}", kernels,
            device => RunBackward(device, dtype, s, wanted, scale, twice));
    }

    private static (float[] Q, float[] K, float[] V) Inputs(Shape s, int keyRows, float scale)
    {
        int seed = 2300 + s.Tq * 31 + s.Tk * 7 + s.D;
        return (TestData.Uniform(s.QueryCount, seed, scale), TestData.Uniform(s.B * keyRows * s.H * s.D, seed + 1, scale),
            TestData.Uniform(s.B * keyRows * s.H * s.D, seed + 2));
    }

    private static CheckResult RunForward(IDeviceApi device, DType dtype, Shape s, float scale)
    {
        var (q, k, v) = Inputs(s, s.Tk, scale);
        using var dq = DeviceBuffer.Upload(device, dtype, q);
        using var dk = DeviceBuffer.Upload(device, dtype, k);
        using var dv = DeviceBuffer.Upload(device, dtype, v);
        using var output = DeviceBuffer.Allocate(device, dtype, s.QueryCount);
        using var lse = DeviceBuffer.Allocate(device, DType.F32, s.B * s.H * s.Tq);
        AttentionKernels.Attention(device, dtype, dq.Pointer, dk.Pointer, dv.Pointer, output.Pointer, lse.Pointer, s.B, s.Tq, s.Tk, s.H, s.D);

        using var cpu = new CpuReference();
        using var cq = cpu.Stored(dtype, q, s.B, s.Tq, s.H, s.D);
        using var ck = cpu.Stored(dtype, k, s.B, s.Tk, s.H, s.D);
        using var cv = cpu.Stored(dtype, v, s.B, s.Tk, s.H, s.D);
        using var co = AttentionOp.Forward(cq, ck, cv, out var clse);
        using (clse)
        {
            return CheckResult.Combine(
                (TensorCores(dtype, s) ? Tolerances.AttentionTensorCoreOutput(dtype, v.Max(Math.Abs)) : Tolerances.Forward(dtype))
                    .Compare("output", output.Download(), cpu.CastTo(dtype, co)),
                Tolerances.Forward(DType.F32).Compare("logSumExp", lse.Download(), clse.ToSingleArray()));
        }
    }

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, Shape s, Wanted wanted, float scale, bool twice)
    {
        var (q, k, v) = Inputs(s, s.Tk, scale);
        float[] dOut = TestData.Uniform(s.QueryCount, seed: 2900 + s.Tq + s.D);
        bool wantDq = wanted.HasFlag(Wanted.Dq), wantDk = wanted.HasFlag(Wanted.Dk), wantDv = wanted.HasFlag(Wanted.Dv);

        using var cpu = new CpuReference();
        using var cq = cpu.Stored(dtype, q, s.B, s.Tq, s.H, s.D);
        using var ck = cpu.Stored(dtype, k, s.B, s.Tk, s.H, s.D);
        using var cv = cpu.Stored(dtype, v, s.B, s.Tk, s.H, s.D);
        using var cdo = cpu.Stored(dtype, dOut, s.B, s.Tq, s.H, s.D);
        // The forward's output as a buffer of the dtype holds it, and its logSumExp, feed both backwards.
        float[] output, lse;
        using (var co = AttentionOp.Forward(cq, ck, cv, out var clse))
        using (clse)
        {
            output = cpu.CastTo(dtype, co);
            lse = clse.ToSingleArray();
        }
        using var cout = cpu.Stored(dtype, output, s.B, s.Tq, s.H, s.D);
        using var clseStored = cpu.F32(lse, s.B, s.H, s.Tq);
        using var cdq = wantDq ? cpu.Backend.Empty([s.B, s.Tq, s.H, s.D], DType.F32) : null;
        using var cdk = wantDk ? cpu.Backend.Empty([s.B, s.Tk, s.H, s.D], DType.F32) : null;
        using var cdv = wantDv ? cpu.Backend.Empty([s.B, s.Tk, s.H, s.D], DType.F32) : null;
        AttentionOp.Backward(cdo, cq, ck, cv, cout, clseStored, cdq, cdk, cdv);

        using var gq = DeviceBuffer.Upload(device, dtype, q);
        using var gk = DeviceBuffer.Upload(device, dtype, k);
        using var gv = DeviceBuffer.Upload(device, dtype, v);
        using var gdo = DeviceBuffer.Upload(device, dtype, dOut);
        using var gout = DeviceBuffer.Upload(device, dtype, output);
        using var glse = DeviceBuffer.Upload(device, DType.F32, lse);
        using var delta = wantDq || wantDk ? DeviceBuffer.Allocate(device, DType.F32, s.B * s.H * s.Tq) : null;
        using var gdq = wantDq ? DeviceBuffer.Allocate(device, dtype, s.QueryCount) : null;
        using var gdk = wantDk ? DeviceBuffer.Allocate(device, dtype, s.KeyCount) : null;
        using var gdv = wantDv ? DeviceBuffer.Allocate(device, dtype, s.KeyCount) : null;
        void Run() => AttentionKernels.AttentionBackward(device, dtype, gdo.Pointer, gq.Pointer, gk.Pointer, gv.Pointer, gout.Pointer, glse.Pointer,
            delta?.Pointer ?? DevicePtr.Null, gdq?.Pointer ?? DevicePtr.Null, gdk?.Pointer ?? DevicePtr.Null, gdv?.Pointer ?? DevicePtr.Null,
            s.B, s.Tq, s.Tk, s.H, s.D);
        Run();
        var parts = new List<CheckResult>();
        if (twice)
        {
            var gradients = new[] { ("dq", gdq), ("dk", gdk), ("dv", gdv) }.Where(g => g.Item2 != null).Select(g => (Name: g.Item1, Buffer: g.Item2!)).ToList();
            var first = gradients.Select(g => g.Buffer.Download()).ToList();
            foreach (var (_, buffer) in gradients) device.Fill(buffer.Pointer, 0x7F, buffer.Bytes, default);
            Run();
            for (int i = 0; i < gradients.Count; i++)
                parts.Add(CheckResult.CompareBits($"{gradients[i].Name} (second run)", gradients[i].Buffer.Download(), first[i]));
        }

        var (boundDq, boundDk, boundDv) = BackwardTensorCores(dtype, s)
            ? RoundingBounds(s, cq.ToSingleArray(), ck.ToSingleArray(), cv.ToSingleArray(), cdo.ToSingleArray(), output, lse)
            : (0.0, 0.0, 0.0);
        Tolerance For(double bound) => BackwardTensorCores(dtype, s) ? Tolerances.AttentionTensorCoreGradient(dtype, bound) : Tolerances.Gradient(dtype);
        if (wantDq) parts.Add(For(boundDq).Compare("dq", gdq!.Download(), cpu.CastTo(dtype, cdq!)));
        if (wantDk) parts.Add(For(boundDk).Compare("dk", gdk!.Download(), cpu.CastTo(dtype, cdk!)));
        if (wantDv) parts.Add(For(boundDv).Compare("dv", gdv!.Download(), cpu.CastTo(dtype, cdv!)));
        return CheckResult.Combine([.. parts]);
    }

    /// <summary>
    /// The largest sums of absolute terms the tensor-core backward rounds (<see cref="Tolerances.AttentionTensorCoreGradient"/>):
    /// max over (row, d) of sum |ds_ij| |k_j| (dq), sum_i |ds_ij| |q_i| (dk) and sum_i p_ij |dO_i| (dv), in double from the
    /// stored inputs, the forward's output and logSumExp (the arrays in [B, T, H, D] and [B, H, Tq] order).
    /// </summary>
    private static (double Dq, double Dk, double Dv) RoundingBounds(Shape s, float[] q, float[] k, float[] v, float[] dOut, float[] output, float[] lse)
    {
        double scale = 1.0 / Math.Sqrt(s.D);
        int offset = s.Tk - s.Tq;
        var dqSums = new double[s.QueryCount];
        var dkSums = new double[s.KeyCount];
        var dvSums = new double[s.KeyCount];
        double Dot(float[] a, long ai, float[] b, long bi)
        {
            double sum = 0;
            for (int d = 0; d < s.D; d++) sum += (double)a[ai + d] * b[bi + d];
            return sum;
        }
        for (int b = 0; b < s.B; b++)
            for (int h = 0; h < s.H; h++)
                for (int i = 0; i < s.Tq; i++)
                {
                    long qi = (((long)b * s.Tq + i) * s.H + h) * s.D;
                    double lseI = lse[((long)b * s.H + h) * s.Tq + i], delta = Dot(dOut, qi, output, qi);
                    for (int j = 0; j <= offset + i; j++)
                    {
                        long kj = (((long)b * s.Tk + j) * s.H + h) * s.D;
                        double p = Math.Exp(Dot(q, qi, k, kj) * scale - lseI);
                        double ds = Math.Abs(p * (Dot(dOut, qi, v, kj) - delta) * scale);
                        for (int d = 0; d < s.D; d++)
                        {
                            dqSums[qi + d] += ds * Math.Abs(k[kj + d]);
                            dkSums[kj + d] += ds * Math.Abs(q[qi + d]);
                            dvSums[kj + d] += p * Math.Abs(dOut[qi + d]);
                        }
                    }
                }
        return (dqSums.DefaultIfEmpty().Max(), dkSums.DefaultIfEmpty().Max(), dvSums.DefaultIfEmpty().Max());
    }
}
