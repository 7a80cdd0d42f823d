using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Qkv;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/qkv.cu through <see cref="QkvKernels"/>, against <see cref="CpuQkvProjection"/>'s host reference (CpuRotary's
/// rotation of the q and k column blocks, the v block moved) on the same stored values: Phi-2's head shape (D 80, rd
/// 32), odd head dims and rotary parts, rd 0 (a pure split) and the whole head rotated; without a cache (training: q,
/// k, v [B, T, H, D]) and into a KV cache (k and v into the cache's rows, the rest of the cache bit for bit untouched),
/// every row from 0, at one offset, and a different position per batch row (0, the last row, one past the cache that
/// is skipped, a negative one that gives q NaN); grids smaller than the row count. Backward: dq and dk rotated back
/// and dv into one [N, 3C], with each of dq, dk, dv absent in turn (zeros in its block). f32, bf16, f16 at
/// <see cref="Tolerances.Forward"/>: the angles match the CPU's, and what remains is FMA contraction on a GPU and the
/// output's one rounding; v and the cache's other rows are compared bit for bit.
/// </summary>
public static class QkvChecks
{
    private const double Theta = 10000;

    private sealed record Shape(int B, int T, int H, int D, int Rd)
    {
        public override string ToString() => $"[{B}, {T}, {H}, {D}] rd {Rd}";
        public int C => H * D;
        public QkvShape Qkv => new(H, D, Rd, Theta);
    }

    private static readonly Shape Phi2 = new(2, 3, 3, 80, 32);

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Forward(DType.F32, Phi2, null),
        Forward(DType.F32, Phi2, [37, 37]),
        Forward(DType.F32, new(1, 4, 2, 10, 6), [5], maxBlocks: 3),
        Forward(DType.F32, new(2, 2, 2, 16, 16), [1, 2040]),
        Forward(DType.F32, new(2, 2, 2, 9, 0), null),
        Forward(DType.BF16, Phi2, null),
        Forward(DType.BF16, Phi2, [1000, 3]),
        Forward(DType.F16, Phi2, [0, 9]),
        Forward(DType.F32, new(3, 2, 2, 10, 6), [3, -1, 0]),
        Cached(DType.F32, Phi2 with { T = 1 }, capacity: 7, [0, 6]),
        Cached(DType.F32, Phi2 with { B = 3 }, capacity: 9, [6, 0, 2]),
        Cached(DType.F32, new(4, 2, 2, 10, 6), capacity: 6, [4, -1, 5, 0], maxBlocks: 3),
        Cached(DType.BF16, Phi2 with { B = 3, T = 1 }, capacity: 2048, [2047, 0, 100]),
        Cached(DType.BF16, new(3, 2, 3, 5, 4), capacity: 5, [3, 7, 0]),
        Cached(DType.F16, Phi2 with { T = 2 }, capacity: 8, [6, 1]),
        Backward(DType.F32, Phi2, null, "dq dk dv"),
        Backward(DType.F32, Phi2, [37, 0], "dq dk dv"),
        Backward(DType.F32, new(1, 4, 2, 10, 6), [5], "dk dv", maxBlocks: 3),
        Backward(DType.F32, new(2, 2, 2, 10, 6), [3, -2], "dq dv"),
        Backward(DType.BF16, Phi2, [11, 2000], "dq dk"),
        Backward(DType.BF16, new(2, 2, 2, 9, 0), null, "dq dk dv"),
        Backward(DType.F16, Phi2, [4, 9], "dq dk dv"),
    ];

    private static string Positions(int[]? offsets) => offsets is null ? "no positions" : $"offsets [{string.Join(", ", offsets)}]";

    private static string Grid(int maxBlocks) => maxBlocks == int.MaxValue ? "" : $", {maxBlocks} blocks";

    private static DeviceCheck Forward(DType dtype, Shape s, int[]? offsets, int maxBlocks = int.MaxValue)
    {
        string kernel = $"qkv_split_rotary_{KernelName.Suffix(dtype)}";
        return new($"{kernel} {s} {Positions(offsets)}{Grid(maxBlocks)}", [kernel], device => RunForward(device, dtype, s, offsets, 0, maxBlocks));
    }

    private static DeviceCheck Cached(DType dtype, Shape s, int capacity, int[] offsets, int maxBlocks = int.MaxValue)
    {
        string kernel = $"qkv_split_rotary_{KernelName.Suffix(dtype)}";
        return new($"{kernel} {s} into a cache of {capacity} at {Positions(offsets)}{Grid(maxBlocks)}", [kernel],
            device => RunForward(device, dtype, s, offsets, capacity, maxBlocks));
    }

    private static DeviceCheck Backward(DType dtype, Shape s, int[]? offsets, string present, int maxBlocks = int.MaxValue)
    {
        string kernel = $"qkv_split_rotary_backward_{KernelName.Suffix(dtype)}";
        return new($"{kernel} {s} {Positions(offsets)} {present}{Grid(maxBlocks)}", [kernel], device => RunBackward(device, dtype, s, offsets, present, maxBlocks));
    }

    private static CheckResult RunForward(IDeviceApi device, DType dtype, Shape s, int[]? offsets, int capacity, int maxBlocks)
    {
        int rows = s.B * s.T, c = s.C;
        float[] qkv = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * 3 * c, seed: 2100 + s.D * 7 + s.B + (offsets?.Sum() ?? 0), scale: 2f));
        int kvCount = capacity > 0 ? s.B * capacity * c : rows * c;
        float[] priorK = CpuReference.RoundTrip(dtype, TestData.Uniform(kvCount, seed: 2200 + capacity, scale: 5f));
        float[] priorV = CpuReference.RoundTrip(dtype, TestData.Uniform(kvCount, seed: 2300 + capacity, scale: 5f));
        using var dQkv = DeviceBuffer.Upload(device, dtype, qkv);
        using var dQ = DeviceBuffer.Allocate(device, dtype, rows * c);
        using var dK = DeviceBuffer.Upload(device, dtype, priorK);
        using var dV = DeviceBuffer.Upload(device, dtype, priorV);
        using var dRows = offsets is null ? null : DeviceBuffer.Upload(device, offsets);
        QkvKernels.SplitRotary(device, dtype, dQkv.Pointer, dQ.Pointer, dK.Pointer, dV.Pointer, dRows?.Pointer ?? DevicePtr.Null,
            s.B, s.T, s.H, s.D, s.Rd, Theta, capacity, maxBlocks: maxBlocks);

        // The CPU refuses a negative offset: it rotates that row at 0, and the kernel's NaN is expected instead.
        int[]? cpuOffsets = offsets?.Select(o => Math.Max(o, 0)).ToArray();
        var (q, k, v) = CpuQkvProjection.SplitRotary(qkv, s.B, s.T, s.Qkv, cpuOffsets);
        q = CpuReference.RoundTrip(dtype, q);
        k = CpuReference.RoundTrip(dtype, k);
        int rowBlock = s.T * c;
        float[] expectedK = capacity > 0 ? (float[])priorK.Clone() : k, expectedV = capacity > 0 ? (float[])priorV.Clone() : v;
        for (int b = 0; b < s.B; b++)
        {
            int offset = offsets?[b] ?? 0;
            if (offset < 0)
            {
                q.AsSpan(b * rowBlock, rowBlock).Fill(float.NaN);
                if (capacity == 0) k.AsSpan(b * rowBlock, rowBlock).Fill(float.NaN);
            }
            if (capacity == 0 || offset < 0 || offset + s.T > capacity) continue; // a row outside the cache writes nothing
            k.AsSpan(b * rowBlock, rowBlock).CopyTo(expectedK.AsSpan((b * capacity + offset) * c, rowBlock));
            v.AsSpan(b * rowBlock, rowBlock).CopyTo(expectedV.AsSpan((b * capacity + offset) * c, rowBlock));
        }
        var tolerance = Tolerances.Forward(dtype);
        return CheckResult.Combine(
            tolerance.Compare("q", dQ.Download(), q),
            tolerance.Compare(capacity > 0 ? "key cache" : "k", dK.Download(), expectedK),
            CheckResult.CompareBits(capacity > 0 ? "value cache" : "v", dV.Download(), expectedV));
    }

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, Shape s, int[]? offsets, string present, int maxBlocks)
    {
        int rows = s.B * s.T, c = s.C;
        float[]? Gradient(string name, int seed) =>
            present.Split(' ').Contains(name) ? CpuReference.RoundTrip(dtype, TestData.Uniform(rows * c, seed: seed + s.D, scale: 3f)) : null;
        float[]? dq = Gradient("dq", 2400), dk = Gradient("dk", 2500), dv = Gradient("dv", 2600);
        DeviceBuffer? Upload(float[]? values) => values is null ? null : DeviceBuffer.Upload(device, dtype, values);
        using var bq = Upload(dq);
        using var bk = Upload(dk);
        using var bv = Upload(dv);
        using var dQkv = DeviceBuffer.Allocate(device, dtype, rows * 3 * c);
        using var dRows = offsets is null ? null : DeviceBuffer.Upload(device, offsets);
        QkvKernels.SplitRotaryBackward(device, dtype, bq?.Pointer ?? DevicePtr.Null, bk?.Pointer ?? DevicePtr.Null, bv?.Pointer ?? DevicePtr.Null, dQkv.Pointer,
            dRows?.Pointer ?? DevicePtr.Null, s.B, s.T, s.H, s.D, s.Rd, Theta, maxBlocks: maxBlocks);

        int[]? cpuOffsets = offsets?.Select(o => Math.Max(o, 0)).ToArray();
        float[] expected = CpuReference.RoundTrip(dtype, CpuQkvProjection.SplitRotaryBackward(dq, dk, dv, s.B, s.T, s.Qkv, cpuOffsets));
        // A negative offset makes the row's present dq and dk blocks NaN; an absent gradient's block stays zeros.
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < 2 && offsets is not null && offsets[r / s.T] < 0; j++)
                if ((j == 0 ? dq : dk) is not null) expected.AsSpan(r * 3 * c + j * c, c).Fill(float.NaN);
        return Tolerances.Forward(dtype).Compare("dqkv", dQkv.Download(), expected);
    }
}
