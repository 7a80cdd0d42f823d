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
/// forward's output (rounded to the dtype) and logSumExp on both sides, so it is checked on its own. The forward of a 16-bit dtype with D a multiple of 16 runs kernels/attention_mma.cu (tensor
/// cores, attention_mma_{dtype}_d{bound}; <see cref="AttentionKernels.Choose"/>): its checks pair D in {16, 32, 64, 80, 96, 128} with Tq and Tk in
/// {1, 15, 16, 17, 64, 127, 129, 300} (Tq &lt; Tk among them), B above 1, bf16 and f16. Tolerances:
/// <see cref="Tolerances.Forward"/> for the output and logSumExp (<see cref="Tolerances.AttentionTensorCoreOutput"/> for
/// the tensor-core output), <see cref="Tolerances.Gradient"/> for dq, dk and dv.
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
    ];

    /// <summary>Whether <see cref="AttentionKernels.Attention"/> runs the tensor-core kernel on these (16-byte aligned) buffers.</summary>
    private static bool TensorCores(DType dtype, Shape s) => AttentionKernels.UsesTensorCores(dtype, s.D, default, default, default);

    private static DeviceCheck Forward(DType dtype, Shape s, float scale = 1.5f)
    {
        string kernel = AttentionKernels.Choose(dtype, s.Tq, s.Tk, s.D, cached: false, default, default, default).Kernel(dtype, cached: false);
        return new($"{kernel} {s}{(scale != 1.5f ? $" inputs x{scale}" : "")}", [kernel], device => RunForward(device, dtype, s, scale));
    }

    private static DeviceCheck Backward(DType dtype, Shape s, Wanted wanted, float scale = 1.5f)
    {
        string suffix = KernelName.Suffix(dtype);
        string what = wanted == Wanted.All ? "all gradients" : string.Join(" and ", Enum.GetValues<Wanted>().Where(w => w != Wanted.All && wanted.HasFlag(w)).Select(w => w.ToString().ToLowerInvariant())) + " only";
        string[] kernels = (wanted & (Wanted.Dq | Wanted.Dk)) != 0 ? [$"attention_backward_delta_{suffix}", $"attention_backward_{suffix}"] : [$"attention_backward_{suffix}"];
        return new($"attention_backward_{suffix} {s} {what}{(scale != 1.5f ? $" inputs x{scale}" : "")}", kernels,
            device => RunBackward(device, dtype, s, wanted, scale));
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

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, Shape s, Wanted wanted, float scale)
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
        AttentionKernels.AttentionBackward(device, dtype, gdo.Pointer, gq.Pointer, gk.Pointer, gv.Pointer, gout.Pointer, glse.Pointer,
            delta?.Pointer ?? DevicePtr.Null, gdq?.Pointer ?? DevicePtr.Null, gdk?.Pointer ?? DevicePtr.Null, gdv?.Pointer ?? DevicePtr.Null,
            s.B, s.Tq, s.Tk, s.H, s.D);

        var tolerance = Tolerances.Gradient(dtype);
        var parts = new List<CheckResult>();
        if (wantDq) parts.Add(tolerance.Compare("dq", gdq!.Download(), cpu.CastTo(dtype, cdq!)));
        if (wantDk) parts.Add(tolerance.Compare("dk", gdk!.Download(), cpu.CastTo(dtype, cdk!)));
        if (wantDv) parts.Add(tolerance.Compare("dv", gdv!.Download(), cpu.CastTo(dtype, cdv!)));
        return CheckResult.Combine([.. parts]);
    }
}
