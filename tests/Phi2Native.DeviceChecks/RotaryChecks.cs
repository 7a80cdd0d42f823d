using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/rotary.cu through <see cref="RotaryKernels"/>, against the CPU backend's <see cref="RotaryOp"/> on the same
/// widened values: Phi-2's shape per head (D = 80, rd = 32, theta 10000) with no positions (every row from 0) and at
/// KV-cache offsets up to the end of its 2048 positions (where an fp32 angle would already be off), odd head dims and
/// rotary parts, the whole head rotated, rd = 0 (a copy), in place (y = x, dX = dY), grids smaller than the row count
/// (each block then recomputes its shared cos/sin per row), and a different offset per batch row (0, 2047 and past it,
/// a negative one expecting a NaN row), forward and backward. Tolerances are <see cref="Tolerances.Forward"/> for both
/// directions: the angles match the CPU's (double, rounded once), and what remains is FMA contraction of the two
/// products on a GPU and, for bf16, the output's one rounding.
/// </summary>
public static class RotaryChecks
{
    private const double Theta = 10000;

    private sealed record Shape(int B, int T, int H, int D, int Rd)
    {
        public override string ToString() => $"[{B}, {T}, {H}, {D}] rd {Rd}";
        public int Count => B * T * H * D;
    }

    private static readonly Shape Phi2 = new(2, 5, 3, 80, 32);

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Check(DType.F32, backward: false, Phi2, offset: 0),
        Check(DType.F32, backward: false, Phi2, offset: 37),
        Check(DType.F32, backward: false, Phi2 with { B = 1, T = 3 }, offset: 2040),
        Check(DType.F32, backward: false, new(1, 3, 2, 10, 6), offset: 5),
        Check(DType.F32, backward: false, new(2, 2, 3, 16, 16), offset: 1),
        Check(DType.F32, backward: false, new(1, 2, 2, 9, 0), offset: 3),
        Check(DType.F32, backward: false, Phi2, offset: 11, inPlace: true),
        Check(DType.F32, backward: false, Phi2, offset: 7, maxBlocks: 3),
        Check(DType.BF16, backward: false, Phi2, offset: 0),
        Check(DType.BF16, backward: false, Phi2, offset: 1000),
        Check(DType.F32, backward: true, Phi2, offset: 0),
        Check(DType.F32, backward: true, Phi2, offset: 37),
        Check(DType.F32, backward: true, new(1, 3, 2, 10, 6), offset: 5),
        Check(DType.F32, backward: true, Phi2, offset: 11, inPlace: true),
        Check(DType.BF16, backward: true, Phi2, offset: 37),
        Check(DType.BF16, backward: true, Phi2, offset: 7, inPlace: true, maxBlocks: 4),
        Check(DType.F32, backward: false, Phi2 with { B = 4, T = 1 }, [0, 37, 2047, 5]),
        Check(DType.F32, backward: false, Phi2 with { B = 3, T = 4 }, [0, 2044, 11], maxBlocks: 5),
        Check(DType.F32, backward: false, new(3, 2, 2, 10, 6), [3, -1, 0]),
        Check(DType.BF16, backward: false, Phi2 with { B = 3, T = 2 }, [2046, 0, 100]),
        Check(DType.BF16, backward: false, Phi2 with { B = 2, T = 1 }, [-5, 9]),
        Check(DType.F32, backward: true, Phi2 with { B = 3, T = 2 }, [4, 0, 2000]),
        Check(DType.BF16, backward: true, new(2, 3, 2, 10, 6), [9, -2], inPlace: true),
    ];

    /// <summary>Every row at <paramref name="offset"/>: 0 passes no positions at all (the kernel's null path).</summary>
    private static DeviceCheck Check(DType dtype, bool backward, Shape s, int offset, bool inPlace = false, int maxBlocks = int.MaxValue) =>
        Check(dtype, backward, s, offset == 0 ? null : [.. Enumerable.Repeat(offset, s.B)], inPlace, maxBlocks);

    private static DeviceCheck Check(DType dtype, bool backward, Shape s, int[]? offsets, bool inPlace = false, int maxBlocks = int.MaxValue)
    {
        string kernel = $"rotary{(backward ? "_backward" : "")}_{KernelName.Suffix(dtype)}";
        string grid = maxBlocks == int.MaxValue ? "" : $", {maxBlocks} blocks";
        string positions = offsets is null ? "no positions" : $"offsets [{string.Join(", ", offsets)}]";
        return new($"{kernel} {s} {positions}{(inPlace ? " in place" : "")}{grid}", [kernel],
            device => Run(device, dtype, backward, s, offsets, inPlace, maxBlocks));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, bool backward, Shape s, int[]? offsets, bool inPlace, int maxBlocks)
    {
        float[] x = TestData.Uniform(s.Count, seed: 1400 + s.D * 7 + (offsets?.Sum() ?? 0) + s.B, scale: 2f);
        using var input = DeviceBuffer.Upload(device, dtype, x);
        using var separate = inPlace ? null : DeviceBuffer.Allocate(device, dtype, s.Count);
        using var rows = offsets is null ? null : DeviceBuffer.Upload(device, offsets);
        DevicePtr output = separate?.Pointer ?? input.Pointer, positions = rows?.Pointer ?? DevicePtr.Null;
        if (backward) RotaryKernels.RotaryBackward(device, dtype, input.Pointer, output, positions, s.B, s.T, s.H, s.D, s.Rd, Theta, maxBlocks: maxBlocks);
        else RotaryKernels.Rotary(device, dtype, input.Pointer, output, positions, s.B, s.T, s.H, s.D, s.Rd, Theta, maxBlocks: maxBlocks);
        float[] actual = (separate ?? input).Download();

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, x, s.B, s.T, s.H, s.D);
        // The CPU throws for a negative offset; the kernel gives that row NaN.
        int[]? cpuOffsets = offsets?.Select(o => Math.Max(o, 0)).ToArray();
        using var co = cpuOffsets is null ? null
            : cpu.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(cpuOffsets.AsSpan()), DType.I32, [s.B], DType.I32);
        float[] expected;
        if (backward)
        {
            using var cdx = cpu.Backend.Empty([s.B, s.T, s.H, s.D], DType.F32);
            RotaryOp.Backward(cx, cdx, s.Rd, Theta, co);
            expected = cpu.CastTo(dtype, cdx);
        }
        else
        {
            using var cy = RotaryOp.Forward(cx, s.Rd, Theta, co);
            expected = cpu.CastTo(dtype, cy);
        }
        int rowElements = s.T * s.H * s.D;
        for (int b = 0; offsets is not null && b < s.B; b++)
            if (offsets[b] < 0) expected.AsSpan(b * rowElements, rowElements).Fill(float.NaN);
        return Tolerances.Forward(dtype).Compare(backward ? "dX" : "y", actual, expected);
    }
}
