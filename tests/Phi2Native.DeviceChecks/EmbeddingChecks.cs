using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/embedding.cu through <see cref="EmbeddingKernels"/>, against the CPU backend's Embedding and
/// EmbeddingBackward on the same widened values. A gather is a move and the backward adds each id's rows in the CPU's
/// order, so everything is compared bit for bit: forward in every table/output dtype pair, ids that repeat, ids in the
/// padding rows at the end of the vocabulary (Phi-2 uses 50295 of its 51200), channel counts not a multiple of the
/// block, grids smaller than the row count (each block walks several rows), more ids than one id tile of backward (so the owner scan crosses tiles), dWeight already holding a gradient;
/// and ids outside the vocabulary: no access out of bounds, a NaN row (forward) or nothing (backward) for them, the
/// first bad position flagged, while the CPU backend refuses the same ids.
/// </summary>
public static class EmbeddingChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Forward(DType.F32, DType.F32, vocab: 37, channels: 80, count: 11),
        Forward(DType.F32, DType.F32, vocab: 50, channels: 7, count: 9),
        Forward(DType.F32, DType.F32, vocab: 9, channels: 2561, count: 4),
        Forward(DType.BF16, DType.BF16, vocab: 37, channels: 80, count: 11),
        Forward(DType.BF16, DType.F32, vocab: 37, channels: 45, count: 11),
        Forward(DType.F32, DType.BF16, vocab: 37, channels: 45, count: 11),
        Forward(DType.BF16, DType.BF16, vocab: 37, channels: 80, count: 11, maxBlocks: 3),
        Backward(DType.F32, vocab: 37, channels: 80, count: 13),
        Backward(DType.F32, vocab: 20, channels: 7, count: 70),
        Backward(DType.F32, vocab: 5, channels: 300, count: 9),
        Backward(DType.BF16, vocab: 37, channels: 80, count: 13),
        Backward(DType.BF16, vocab: 20, channels: 7, count: 70),
        Backward(DType.F32, vocab: 20, channels: 7, count: 70, maxBlocks: 3),
        Backward(DType.F32, vocab: 5, channels: 300, count: 9, maxBlocks: 2),
        new("embedding_f32 ids outside the vocabulary", ["embedding_f32"], ForwardBadIds),
        new("embedding_backward_f32 ids outside the vocabulary", ["embedding_backward_f32"], BackwardBadIds),
    ];

    private static string Grid(int maxBlocks) => maxBlocks == int.MaxValue ? "" : $", {maxBlocks} blocks";

    private static DeviceCheck Forward(DType table, DType output, int vocab, int channels, int count, int maxBlocks = int.MaxValue)
    {
        string kernel = EmbeddingKernels.ForwardName(table, output);
        return new($"{kernel} [{vocab}, {channels}] x {count} ids{Grid(maxBlocks)}", [kernel],
            device => RunForward(device, table, output, vocab, channels, count, maxBlocks));
    }

    private static DeviceCheck Backward(DType dtype, int vocab, int channels, int count, int maxBlocks = int.MaxValue)
    {
        string kernel = $"embedding_backward_{KernelName.Suffix(dtype)}";
        return new($"{kernel} [{vocab}, {channels}] x {count} ids{Grid(maxBlocks)}", [kernel],
            device => RunBackward(device, dtype, vocab, channels, count, maxBlocks));
    }

    /// <summary>
    /// Seeded ids in [0, vocab) where the first id comes back several times (at the end too), the last row of the
    /// vocabulary (a padding row in Phi-2) appears, and id 0 appears.
    /// </summary>
    private static int[] MakeIds(int count, int vocab)
    {
        var random = new Random(700 + count * 31 + vocab);
        var ids = new int[count];
        for (int n = 0; n < count; n++) ids[n] = random.Next(vocab);
        if (count >= 4)
        {
            ids[count / 2] = ids[0];
            ids[count - 1] = ids[0];
            ids[1] = vocab - 1;
            ids[2] = 0;
        }
        return ids;
    }

    internal static Tensor CpuIds(CpuReference cpu, int[] ids) =>
        cpu.Backend.FromBytes(MemoryMarshal.AsBytes(ids.AsSpan()), DType.I32, [ids.Length], DType.I32);

    private static CheckResult RunForward(IDeviceApi device, DType tableDtype, DType outputDtype, int vocab, int channels, int count, int maxBlocks)
    {
        float[] table = TestData.Uniform(vocab * channels, seed: 800 + channels, scale: 2f);
        int[] ids = MakeIds(count, vocab);
        EmbeddingKernels.CheckIds(ids, vocab);
        using var weight = DeviceBuffer.Upload(device, tableDtype, table);
        using var dIds = DeviceBuffer.Upload(device, ids);
        using var output = DeviceBuffer.Allocate(device, outputDtype, count * channels);
        EmbeddingKernels.Embedding(device, tableDtype, outputDtype, weight.Pointer, dIds.Pointer, output.Pointer, count, vocab, channels, maxBlocks: maxBlocks);

        using var cpu = new CpuReference();
        using var cw = cpu.Stored(tableDtype, table, vocab, channels);
        using var ci = CpuIds(cpu, ids);
        using var cy = EmbeddingOp.Forward(cw, ci);
        return CheckResult.CompareBits("output", output.Download(), cpu.CastTo(outputDtype, cy));
    }

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, int vocab, int channels, int count, int maxBlocks)
    {
        float[] dOut = TestData.Uniform(count * channels, seed: 900 + channels);
        float[] prior = TestData.Uniform(vocab * channels, seed: 1000 + channels, scale: 3f);
        int[] ids = MakeIds(count, vocab);
        using var dY = DeviceBuffer.Upload(device, dtype, dOut);
        using var dIds = DeviceBuffer.Upload(device, ids);
        using var dWeight = DeviceBuffer.Upload(device, DType.F32, prior);
        EmbeddingKernels.EmbeddingBackward(device, dtype, dY.Pointer, dIds.Pointer, dWeight.Pointer, count, vocab, channels, maxBlocks: maxBlocks);

        using var cpu = new CpuReference();
        using var cdy = cpu.Stored(dtype, dOut, count, channels);
        using var ci = CpuIds(cpu, ids);
        using var cdw = cpu.F32(prior, vocab, channels);
        EmbeddingOp.Backward(cdy, ci, cdw);
        // The same fp32 adds in the same order, row after row: equal bit for bit.
        return CheckResult.CompareBits("dWeight", dWeight.Download(), cdw.ToSingleArray());
    }

    // Ids -1 (position 2), V (position 4) and int.MinValue (position 6) among good ones.
    private static readonly int[] BadIds = [3, 0, -1, 5, 12, 3, int.MinValue, 11];
    private const int BadVocab = 12, BadChannels = 40, FirstBad = 2;

    private static CheckResult? CpuRefuses(int[] ids, Func<CpuReference, Tensor, Tensor?> op)
    {
        using var cpu = new CpuReference();
        using var ci = CpuIds(cpu, ids);
        try
        {
            op(cpu, ci)?.Dispose();
        }
        catch (ArgumentOutOfRangeException)
        {
            try
            {
                EmbeddingKernels.CheckIds(ids, BadVocab);
            }
            catch (ArgumentOutOfRangeException e) when (e.Message.Contains($"ids[{FirstBad}]"))
            {
                return null;
            }
            return new CheckResult(double.PositiveInfinity, double.PositiveInfinity, "EmbeddingKernels.CheckIds did not name the first bad position");
        }
        return new CheckResult(double.PositiveInfinity, double.PositiveInfinity, "the CPU backend accepted ids outside the vocabulary");
    }

    private static CheckResult Flag(int? actual) =>
        actual == FirstBad
            ? new CheckResult(0, 0, $"badPosition = {FirstBad}")
            : new CheckResult(double.PositiveInfinity, double.PositiveInfinity, $"badPosition = {actual?.ToString() ?? "none"}, expected {FirstBad}");

    private static CheckResult ForwardBadIds(IDeviceApi device)
    {
        float[] table = TestData.Uniform(BadVocab * BadChannels, seed: 1100);
        using var weight = DeviceBuffer.Upload(device, DType.F32, table);
        using var dIds = DeviceBuffer.Upload(device, BadIds);
        using var output = DeviceBuffer.Allocate(device, DType.F32, BadIds.Length * BadChannels);
        using var flag = DeviceBuffer.Allocate(device, DType.I32, 1);
        EmbeddingKernels.ResetBadPosition(device, flag.Pointer);
        EmbeddingKernels.Embedding(device, DType.F32, DType.F32, weight.Pointer, dIds.Pointer, output.Pointer, BadIds.Length, BadVocab, BadChannels, flag.Pointer);

        var expected = new float[BadIds.Length * BadChannels];
        for (int n = 0; n < BadIds.Length; n++)
            for (int c = 0; c < BadChannels; c++)
                expected[n * BadChannels + c] = (uint)BadIds[n] < BadVocab ? table[BadIds[n] * BadChannels + c] : float.NaN;
        var cpuRefusal = CpuRefuses(BadIds, (cpu, ci) => { using var w = cpu.F32(table, BadVocab, BadChannels); return EmbeddingOp.Forward(w, ci); });
        return CheckResult.Combine([CheckResult.CompareBits("output", output.Download(), expected), Flag(EmbeddingKernels.ReadBadPosition(device, flag.Pointer)), .. cpuRefusal is null ? Array.Empty<CheckResult>() : [cpuRefusal]]);
    }

    private static CheckResult BackwardBadIds(IDeviceApi device)
    {
        float[] dOut = TestData.Uniform(BadIds.Length * BadChannels, seed: 1200);
        float[] prior = TestData.Uniform(BadVocab * BadChannels, seed: 1300);
        using var dY = DeviceBuffer.Upload(device, DType.F32, dOut);
        using var dIds = DeviceBuffer.Upload(device, BadIds);
        using var dWeight = DeviceBuffer.Upload(device, DType.F32, prior);
        using var flag = DeviceBuffer.Allocate(device, DType.I32, 1);
        EmbeddingKernels.ResetBadPosition(device, flag.Pointer);
        EmbeddingKernels.EmbeddingBackward(device, DType.F32, dY.Pointer, dIds.Pointer, dWeight.Pointer, BadIds.Length, BadVocab, BadChannels, flag.Pointer);

        // The good positions only, through the CPU backend.
        int[] good = [.. Enumerable.Range(0, BadIds.Length).Where(n => (uint)BadIds[n] < BadVocab)];
        using var cpu = new CpuReference();
        using var cdy = cpu.F32([.. good.SelectMany(n => dOut.AsSpan(n * BadChannels, BadChannels).ToArray())], good.Length, BadChannels);
        using var ci = CpuIds(cpu, [.. good.Select(n => BadIds[n])]);
        using var cdw = cpu.F32(prior, BadVocab, BadChannels);
        EmbeddingOp.Backward(cdy, ci, cdw);
        var cpuRefusal = CpuRefuses(BadIds, (c, ids) =>
        {
            using var d = c.F32(dOut, BadIds.Length, BadChannels);
            using var w = c.F32(prior, BadVocab, BadChannels);
            EmbeddingOp.Backward(d, ids, w);
            return null;
        });
        return CheckResult.Combine([CheckResult.CompareBits("dWeight", dWeight.Download(), cdw.ToSingleArray()), Flag(EmbeddingKernels.ReadBadPosition(device, flag.Pointer)), .. cpuRefusal is null ? Array.Empty<CheckResult>() : [cpuRefusal]]);
    }
}
