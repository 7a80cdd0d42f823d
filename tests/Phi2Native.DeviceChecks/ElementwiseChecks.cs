using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/elementwise.cu through <see cref="ElementwiseKernels"/>, against the CPU backend's Add, ScaleInPlace and AddInPlace on
/// the same (widened) inputs, cast back to the dtype by its Cast. Both sides do one fp32 operation and round once to
/// nearest even, so the results must agree bit for bit (NaN with NaN).
/// </summary>
public static class ElementwiseChecks
{
    private static readonly DType[] Types = [DType.F32, DType.BF16, DType.F16];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. Types.Select(d => Check($"add_{KernelName.Suffix(d)} n=1001", "add", d, device => Add(device, d, 1001))),
        .. Types.Select(d => Check($"add_{KernelName.Suffix(d)} n=77 in place", "add", d, device => Add(device, d, 77, inPlace: true))),
        Check("add_f32 n=1", "add", DType.F32, device => Add(device, DType.F32, 1)),
        .. Types.Select(d => Check($"scale_{KernelName.Suffix(d)} n=1001", "scale", d, device => Scale(device, d, 1001, 0.3f))),
        .. Types.Select(d => Check($"scale_{KernelName.Suffix(d)} n=77 in place", "scale", d, device => Scale(device, d, 77, -2.5f, inPlace: true))),
        Check("accumulate_f32 n=1001", "accumulate", DType.F32, device => Accumulate(device, 1001)),
        Check("accumulate_f32 n=77 into itself", "accumulate", DType.F32, device => Accumulate(device, 77, intoItself: true)),
        .. new[] { DType.F32, DType.BF16 }.Select(d => Check($"scale_by_{KernelName.Suffix(d)} n=1001", "scale_by", d, device => ScaleBy(device, d, 1001, 0.37f))),
        Check("scale_by_f32 n=77 in place", "scale_by", DType.F32, device => ScaleBy(device, DType.F32, 77, -2.5f, inPlace: true)),
        Check("accumulate_scaled_f32 n=1001", "accumulate_scaled", DType.F32, device => AccumulateScaled(device, 1001, 0.37f)),
    ];

    private static DeviceCheck Check(string name, string op, DType dtype, Func<IDeviceApi, CheckResult> run) =>
        new(name, [op + "_" + KernelName.Suffix(dtype)], run);

    // Inputs start with values whose fp32 sum or product overflows the 16-bit formats, a NaN and infinities; the
    // rest are uniform. An odd n leaves the last block partial: the kernel's bound check keeps y's neighbour intact.
    private static float[] Inputs(int n, int seed, float special)
    {
        float[] values = TestData.Uniform(n, seed, scale: 4f);
        float[] specials = [special, -special, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-3f];
        Array.Copy(specials, values, Math.Min(n, specials.Length));
        return values;
    }

    private static CheckResult Add(IDeviceApi device, DType dtype, int n, bool inPlace = false)
    {
        // 40000 + 40000 overflows f16 (max 65504); 3e38 + 3e38 overflows fp32 and so bf16.
        float big = dtype == DType.F16 ? 40000f : 3e38f;
        float[] a = Inputs(n, seed: 1, big), b = Inputs(n, seed: 2, big);
        using var da = DeviceBuffer.Upload(device, dtype, a);
        using var db = DeviceBuffer.Upload(device, dtype, b);
        using var dy = inPlace ? null : DeviceBuffer.Allocate(device, dtype, n);
        var output = dy ?? da;
        ElementwiseKernels.Add(device, dtype, da.Pointer, db.Pointer, output.Pointer, n);
        float[] actual = output.Download();

        using var cpu = new CpuReference();
        using var ta = cpu.Stored(dtype, a, n);
        using var tb = cpu.Stored(dtype, b, n);
        using var sum = cpu.Backend.Add(ta, tb);
        return CheckResult.CompareBits("y", actual, cpu.CastTo(dtype, sum));
    }

    private static CheckResult Scale(IDeviceApi device, DType dtype, int n, float alpha, bool inPlace = false)
    {
        float[] x = Inputs(n, seed: 3, dtype == DType.F16 ? 30000f : 2e38f);
        using var dx = DeviceBuffer.Upload(device, dtype, x);
        using var dy = inPlace ? null : DeviceBuffer.Allocate(device, dtype, n);
        var output = dy ?? dx;
        ElementwiseKernels.Scale(device, dtype, dx.Pointer, output.Pointer, alpha, n);
        float[] actual = output.Download();

        using var cpu = new CpuReference();
        using var t = cpu.Stored(dtype, x, n);
        cpu.Backend.ScaleInPlace(t, alpha);
        return CheckResult.CompareBits("y", actual, cpu.CastTo(dtype, t));
    }

    // y += x over a y that already holds a gradient, as the second micro-batch finds it; fp32 only.
    private static CheckResult Accumulate(IDeviceApi device, int n, bool intoItself = false)
    {
        float[] x = Inputs(n, seed: 4, 3e38f), prior = Inputs(n, seed: 5, 3e38f);
        using var dx = DeviceBuffer.Upload(device, DType.F32, x);
        using var dy = intoItself ? null : DeviceBuffer.Upload(device, DType.F32, prior);
        var accumulator = dy ?? dx;
        ElementwiseKernels.Accumulate(device, DType.F32, dx.Pointer, accumulator.Pointer, n);
        float[] actual = accumulator.Download();

        using var cpu = new CpuReference();
        using var tx = cpu.F32(x, n);
        using var ty = cpu.F32(intoItself ? x : prior, n);
        cpu.Backend.AddInPlace(ty, tx);
        return CheckResult.CompareBits("y", actual, ty.ToSingleArray());
    }

    // y = alpha[0] x with alpha in device memory, against the CPU side of LinearCrossEntropyOp's backward (one fp32
    // product, rounded once to the dtype).
    private static CheckResult ScaleBy(IDeviceApi device, DType dtype, int n, float alpha, bool inPlace = false)
    {
        float[] x = Inputs(n, seed: 6, 2e38f);
        using var dx = DeviceBuffer.Upload(device, dtype, x);
        using var dAlpha = DeviceBuffer.Upload(device, DType.F32, [alpha]);
        using var dy = inPlace ? null : DeviceBuffer.Allocate(device, dtype, n);
        var output = dy ?? dx;
        ElementwiseKernels.ScaleBy(device, dtype, dx.Pointer, output.Pointer, dAlpha.Pointer, n);
        float[] actual = output.Download();

        using var cpu = new CpuReference();
        using var t = cpu.Stored(dtype, x, n);
        using var factor = cpu.F32([alpha], 1);
        Phi2Native.Backends.Ops.Loss.CpuLinearCrossEntropy.Scale(t, t, factor);
        return CheckResult.CompareBits("y", actual, cpu.CastTo(dtype, t));
    }

    // y += alpha[0] x over a y that holds a gradient already: the product rounded, then the sum (no FMA), as the CPU.
    private static CheckResult AccumulateScaled(IDeviceApi device, int n, float alpha)
    {
        float[] x = Inputs(n, seed: 7, 3e38f), prior = Inputs(n, seed: 8, 3e38f);
        using var dx = DeviceBuffer.Upload(device, DType.F32, x);
        using var dy = DeviceBuffer.Upload(device, DType.F32, prior);
        using var dAlpha = DeviceBuffer.Upload(device, DType.F32, [alpha]);
        ElementwiseKernels.AccumulateScaled(device, DType.F32, dx.Pointer, dy.Pointer, dAlpha.Pointer, n);
        float[] actual = dy.Download();

        using var cpu = new CpuReference();
        using var tx = cpu.F32(x, n);
        using var ty = cpu.F32(prior, n);
        using var factor = cpu.F32([alpha], 1);
        Phi2Native.Backends.Ops.Loss.CpuLinearCrossEntropy.AccumulateScaled(tx, ty, factor);
        return CheckResult.CompareBits("y", actual, ty.ToSingleArray());
    }
}
