using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Cuda;
using Phi2Native.Determinism;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/dropout.cu through <see cref="DropoutKernels"/>, against the CPU backend's Dropout and DropoutBackward on the
/// same widened inputs, cast back to the dtype by its Cast: the mask is counter-based and the scale one fp32 multiply
/// rounded once, so outputs must agree bit for bit (dropped elements +0, whatever they held). Each check also compares
/// the mask itself with <see cref="DropoutMask.Keep"/> element by element (inputs are never 0, so "kept" is "non-zero"),
/// and counts the kept elements against n (1 - p) (more than 6 standard deviations off fails: a hash that is wrong but
/// the same on both sides would still keep the right fraction, a constant mask would not). Seeds include ones above
/// 2^63, so the 64-bit seed must reach the kernel unsigned and whole; p covers 0 (a copy), small and usual values,
/// and p so close to 1 that few or no elements survive.
/// </summary>
public static class DropoutChecks
{
    private static readonly DType[] Types = [DType.F32, DType.BF16, DType.F16];
    private static readonly ulong[] Seeds = [0UL, 1234567UL, 0x8000000000000001UL, ulong.MaxValue];

    /// <summary>p just below 1 - 2^-24 (keeps only draws of 2^24 - 1) and p above it (keeps nothing).</summary>
    private const double AlmostOne = 0.9999999, AboveLastDraw = 1 - 1.0 / (1 << 25);

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. from d in Types from s in Seeds select Check(d, 1001, 0.1, s),
        .. Types.Select(d => Check(d, 1001, 0.1, 42, backward: true)),
        Check(DType.F32, 2049, 0.5, 7),
        Check(DType.F32, 2049, 0.5, 7, backward: true),
        Check(DType.BF16, 77, 0.3, 99, inPlace: true),
        Check(DType.F32, 77, 0.3, 99, inPlace: true, backward: true),
        Check(DType.F32, 1001, 1e-9, 5),
        Check(DType.F32, 1001, AlmostOne, 5),
        Check(DType.F16, 1001, AlmostOne, 5, backward: true),
        Check(DType.F32, 1001, AboveLastDraw, 5),
        Check(DType.F32, 1001, 0, 5),
        Check(DType.BF16, 77, 0, 5, inPlace: true),
        Check(DType.F16, 1001, 0, 5, backward: true),
        Check(DType.F32, 1, 0.1, 3),
    ];

    private static DeviceCheck Check(DType dtype, int n, double p, ulong seed, bool inPlace = false, bool backward = false)
    {
        string op = backward ? "dropout_backward" : "dropout";
        string kernel = $"{op}_{KernelName.Suffix(dtype)}";
        string place = inPlace ? (backward ? " dX in place of dY" : " in place") : "";
        return new($"{kernel} n={n} p={p:R} seed=0x{seed:x}{place}", p == 0 ? [] : [kernel],
            device => Run(device, dtype, n, p, seed, inPlace, backward));
    }

    // Never zero, so a zero output is exactly a dropped element; led by values whose scaled product overflows the
    // 16-bit formats, a NaN and the infinities (dropped, they become +0; kept, they stay what they are).
    private static float[] Inputs(DType dtype, int n, ulong seed)
    {
        var random = new Random((int)(seed % 100003) + n);
        var values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float)(0.01 + random.NextDouble() * 4) * (random.Next(2) == 0 ? -1 : 1);
        float big = dtype == DType.F16 ? 60000f : 3e38f;
        float[] specials = [big, -big, float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1e-3f];
        Array.Copy(specials, values, Math.Min(n, specials.Length));
        return values;
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int n, double p, ulong seed, bool inPlace, bool backward)
    {
        float[] x = Inputs(dtype, n, seed);
        using var input = DeviceBuffer.Upload(device, dtype, x);
        using var separate = inPlace ? null : DeviceBuffer.Allocate(device, dtype, n);
        var output = separate ?? input;
        if (backward) DropoutKernels.DropoutBackward(device, dtype, input.Pointer, output.Pointer, p, seed, n);
        else DropoutKernels.Dropout(device, dtype, input.Pointer, output.Pointer, p, seed, n);
        float[] actual = output.Download();

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, x, n);
        float[] expected;
        if (backward)
        {
            using var cdx = cpu.Backend.Empty([n], DType.F32);
            DropoutOp.Backward(cx, cdx, p, seed);
            expected = cpu.CastTo(dtype, cdx);
        }
        else
        {
            using var cy = DropoutOp.Forward(cx, p, seed);
            expected = cpu.CastTo(dtype, cy);
        }
        return CheckResult.Combine(CheckResult.CompareBits(backward ? "dX" : "y", actual, expected), Mask(actual, n, p, seed));
    }

    /// <summary>The kept elements (non-zero outputs of non-zero inputs) against DropoutMask.Keep, and their count against n (1 - p).</summary>
    private static CheckResult Mask(float[] actual, int n, double p, ulong seed)
    {
        int mismatches = 0, first = -1, kept = 0;
        for (int i = 0; i < n; i++)
        {
            bool deviceKept = actual[i] != 0 || float.IsNaN(actual[i]);
            if (deviceKept) kept++;
            if (deviceKept == DropoutMask.Keep(seed, i, p)) continue;
            mismatches++;
            if (first < 0) first = i;
        }
        if (mismatches > 0)
            return new CheckResult(double.PositiveInfinity, double.PositiveInfinity,
                $"mask: {mismatches} of {n} elements kept or dropped unlike DropoutMask.Keep; first at {first}");
        double mean = n * (1 - p), sd = Math.Sqrt(n * p * (1 - p));
        if (Math.Abs(kept - mean) > 6 * sd + 1)
            return new CheckResult(double.PositiveInfinity, double.PositiveInfinity,
                $"mask: {kept} of {n} kept, expected about {mean:F1} (sd {sd:F1}) for p = {p:R}: the draws are not uniform");
        return new CheckResult(0, 0, $"mask: {kept} of {n} kept, as DropoutMask.Keep");
    }
}
