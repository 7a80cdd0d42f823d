using Phi2Native.Backends.Ops.Decoding;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/decode.cu through <see cref="DecodeNextKernels"/>: each row's greedy id and the advanced positions, against
/// <see cref="DecodeNextOp"/> on the CPU backend (the reference: a scan in id order) over the same stored logits, exact.
/// Shapes cover Phi-2's vocabulary (51200: 200 strided columns per thread), a row narrower than the block (7) and an odd
/// width; special rows hold ties (the lower id must win, within a thread's columns and across threads), a NaN (-1),
/// only -inf (0), and a maximum in the last column.
/// </summary>
public static class DecodeNextChecks
{
    private static readonly DType[] Types = [DType.F32, DType.BF16, DType.F16];
    private static readonly (int Rows, int Vocab)[] Shapes = [(2, 51200), (3, 1001), (4, 7)];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. from d in Types
           from s in Shapes
           select Check($"decode_next_{KernelNameSuffix(d)} [{s.Rows}, {s.Vocab}]", d,
               device => Run(device, d, TestData.Uniform(s.Rows * s.Vocab, seed: 17 + s.Vocab, scale: 4f), s.Rows, s.Vocab, chooses: true)),
        Check("decode_next_f32 ties, NaN, -inf, last column", DType.F32, device => Special(device, DType.F32)),
        Check("decode_next_bf16 ties, NaN, -inf, last column", DType.BF16, device => Special(device, DType.BF16)),
        Check("decode_next_f32 positions only", DType.F32, device => Run(device, DType.F32, new float[3 * 5], 3, 5, chooses: false)),
    ];

    private static string KernelNameSuffix(DType dtype) => Backends.Cuda.KernelName.Suffix(dtype);

    private static DeviceCheck Check(string name, DType dtype, Func<IDeviceApi, CheckResult> run) =>
        new(name, ["decode_next_" + KernelNameSuffix(dtype)], run);

    private static CheckResult Special(IDeviceApi device, DType dtype)
    {
        const int vocab = 700;
        float[][] rows =
        [
            // Equal maxima at 600, 3 + 256 and 3 (the same thread's columns) and 5 (another thread's): 3 wins.
            [.. Enumerable.Range(0, vocab).Select(c => c is 3 or 5 or 259 or 600 ? 9f : (c % 13) * 0.25f)],
            // Equal maxima in two threads only, the later thread's first in scan order: 200 wins over 455.
            [.. Enumerable.Range(0, vocab).Select(c => c is 200 or 455 ? 2f : -c * 0.001f)],
            [.. Enumerable.Range(0, vocab).Select(c => c == 411 ? float.NaN : c * 0.5f)],
            [.. Enumerable.Repeat(float.NegativeInfinity, vocab)],
            [.. Enumerable.Range(0, vocab).Select(c => c == vocab - 1 ? 1f : -1f - c * 0.001f)],
        ];
        return Run(device, dtype, [.. rows.SelectMany(r => r)], rows.Length, vocab, chooses: true);
    }

    private static int[] Ints(Tensor tensor) => Backends.Cpu.CpuBackend.Span<int>(tensor).ToArray();

    private static CheckResult Run(IDeviceApi device, DType dtype, float[] logits, int rows, int vocab, bool chooses)
    {
        int[] offsets = [.. Enumerable.Range(0, rows).Select(r => 3 * r)], keyTimes = [.. offsets.Select(o => o + 1)];
        int[] ids = [.. Enumerable.Repeat(-7, rows)];
        using var dLogits = DeviceBuffer.Upload(device, dtype, logits);
        using var dIds = DeviceBuffer.Upload(device, ids);
        using var dOffsets = DeviceBuffer.Upload(device, offsets);
        using var dKeyTimes = DeviceBuffer.Upload(device, keyTimes);
        DecodeNextKernels.DecodeNext(device, dtype, chooses ? dLogits.Pointer : DevicePtr.Null, dIds.Pointer, dOffsets.Pointer, dKeyTimes.Pointer, rows, vocab);
        int[] actual = [.. dIds.DownloadInt32(), .. dOffsets.DownloadInt32(), .. dKeyTimes.DownloadInt32()];

        using var cpu = new CpuReference();
        using var cLogits = cpu.F32(CpuReference.RoundTrip(dtype, logits), rows, vocab);
        using var cIds = cpu.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()), DType.I32, [rows], DType.I32);
        using var cOffsets = cpu.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(offsets.AsSpan()), DType.I32, [rows], DType.I32);
        using var cKeyTimes = cpu.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(keyTimes.AsSpan()), DType.I32, [rows], DType.I32);
        DecodeNextOp.Apply(chooses ? cLogits : null, cIds, cOffsets, cKeyTimes);
        int[] expected = [.. Ints(cIds), .. Ints(cOffsets), .. Ints(cKeyTimes)];
        return CheckResult.CompareBits("ids, offsets, key times", [.. actual.Select(v => (float)v)], [.. expected.Select(v => (float)v)]);
    }
}
