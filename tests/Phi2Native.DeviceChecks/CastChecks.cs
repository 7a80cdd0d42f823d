using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/cast.cu through <see cref="CastKernels"/>: every ordered pair of F32, BF16 and F16, bit for bit (NaN with
/// any NaN) against both the CPU backend's <see cref="IBackend.Cast"/> and the scalar conversions it is built on
/// (<see cref="DTypes.SingleToBFloat16"/>, the (Half) cast). The 16-bit sources are exhaustive (all 65536 patterns,
/// signalling NaNs and subnormals included); the fp32 source is a list of edge cases plus seeded random bit patterns
/// and values on and next to the 16-bit rounding midpoints.
/// </summary>
public static class CastChecks
{
    private static readonly (DType From, DType To)[] Pairs =
    [
        (DType.F32, DType.BF16), (DType.F32, DType.F16), (DType.BF16, DType.F32),
        (DType.BF16, DType.F16), (DType.F16, DType.F32), (DType.F16, DType.BF16),
    ];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. Pairs.Select(p => new DeviceCheck(
            $"{CastKernels.Name(p.From, p.To)} {(p.From == DType.F32 ? "edge cases and random bits" : "all 65536 inputs")}",
            [CastKernels.Name(p.From, p.To)], device => Cast(device, p.From, p.To, Source(p.From)))),
        new("cast_f32_f16 n=5", ["cast_f32_f16"], device => Cast(device, DType.F32, DType.F16, FloatBytes([65520f, -1e-8f, float.NaN, 1.00048828125f, 3.5f]))),
    ];

    /// <summary>
    /// fp32 edge cases: signed zeros, infinities, NaN, fp32 subnormals, the f16 range's edges (65504 is the largest
    /// f16, 65520 the first value that rounds to Inf), f16 subnormals and the values that round into and out of them,
    /// exact ties that round to even (1 + 2^-8 and 1 + 3 * 2^-8 for bf16, 1 + 2^-11 and 1 + 3 * 2^-11 for f16).
    /// </summary>
    public static IReadOnlyList<float> EdgeCases { get; } =
    [
        0f, -0f, 1f, -1f, float.NaN, -float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.MaxValue, -float.MaxValue,
        float.Epsilon, -float.Epsilon, 1e-40f, -1e-40f, 1.17549435e-38f, 3.3895314e38f, 3.3961775e38f,
        65504f, 65519.99f, 65520f, -65520f, 1e6f, -1e6f, 6.1035156e-5f, 6.0975552e-5f, -6.0975552e-5f,
        5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 8.940697e-8f, 1e-10f, -1e-10f,
        1.00390625f, 1.01171875f, 1.0039063f, 1.0004883f, 1.00048828125f, 1.00146484375f, -1.00146484375f, 3.14159265f,
    ];

    private static byte[] Source(DType dtype) => dtype == DType.F32 ? FloatBytes(FloatInputs()) : AllSixteenBitPatterns();

    private static byte[] FloatBytes(float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static byte[] AllSixteenBitPatterns()
    {
        var bits = new ushort[65536];
        for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
        return MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
    }

    // An odd count, so the grid's last block is partial.
    private static float[] FloatInputs()
    {
        var random = new Random(7);
        var values = new List<float>(EdgeCases);
        for (int i = 0; i < 2000; i++)
        {
            // f16 midpoints (a normal f16 plus half its ulp, and the neighbours of that) ...
            ushort h = (ushort)random.Next(0x7c00);
            float mid = (float)BitConverter.UInt16BitsToHalf(h) + (float)Math.ScaleB(1, Math.Max(-25, ((h >> 10) - 15) - 11));
            values.Add(mid);
            values.Add(BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(mid) + 1));
            // ... and bf16 midpoints: the 16 dropped bits exactly 0x8000, or one off.
            int b = (random.Next(0x7f80) << 16) | 0x8000;
            values.Add(BitConverter.Int32BitsToSingle(b));
            values.Add(-BitConverter.Int32BitsToSingle(b - 1));
        }
        for (int i = 0; i < 12001; i++) values.Add(BitConverter.Int32BitsToSingle(random.Next() ^ (random.Next(2) << 31)));
        return [.. values];
    }

    private static CheckResult Cast(IDeviceApi device, DType from, DType to, byte[] source)
    {
        int n = source.Length / from.SizeInBytes();
        using var x = DeviceBuffer.Allocate(device, from, n);
        using var y = DeviceBuffer.Allocate(device, to, n);
        // Raw bytes, not DeviceBuffer.Upload: a 16-bit signalling NaN must reach the kernel as it is.
        device.CopyToDevice(x.Pointer, source, DeviceStream.Default);
        CastKernels.Cast(device, from, to, x.Pointer, y.Pointer, n);
        float[] actual = y.Download();

        using var cpu = new CpuReference();
        using var t = cpu.Backend.FromBytes(source, from, [n], from);
        using var cast = cpu.Backend.Cast(t, to);
        return CheckResult.Combine(
            CheckResult.CompareBits("y vs CpuBackend.Cast", actual, cast.ToSingleArray()),
            CheckResult.CompareBits("y vs scalar conversions", actual, ScalarCast(source, from, to)));
    }

    // Widen (exact), then round once with .NET's conversions.
    private static float[] ScalarCast(byte[] source, DType from, DType to)
    {
        float[] wide = DeviceBuffer.Decode(from, source);
        return to switch
        {
            DType.F32 => wide,
            DType.BF16 => [.. wide.Select(v => DTypes.BFloat16ToSingle(DTypes.SingleToBFloat16(v)))],
            DType.F16 => [.. wide.Select(v => (float)(Half)v)],
            _ => throw new ArgumentException($"no cast to {to}", nameof(to)),
        };
    }
}
