using System.Runtime.InteropServices;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// Attention through a KV cache (<see cref="AttentionKernels.CachedAttention"/>), every kernel <see cref="AttentionKernels.Choose"/>
/// picks: split-K decoding (kernels/attention_decode.cu, Tq 1..4), the cached tensor-core forward (attention_mma.cu's
/// cached_attention_mma, Tq &gt; 4) and attention.cu's SIMT cached_attention (f32, a D the tensor cores do not take),
/// against the CPU backend's cached attention (<see cref="CpuAttention"/>) on the same widened values. The caches hold NaN
/// in every row at or past a batch row's key time (a kernel that reads one, even to multiply it by a zero probability,
/// shows it). Pairwise coverage, not the product: D in {16, 32, 48, 64, 80, 96, 128} (each head-dim bound's kernels in
/// bf16 and f16; 7 and 24 on SIMT), key times and capacities in {1, 15, 16, 17, 64, 127, 129, 300}, Tq 1..4 and above,
/// batch rows with their own key times and a time outside [Tq, Tmax] (NaN rows), large scores (the max moves between
/// chunks), a row that sees no key of the last chunk (Tq 4, key time 129). The split-K decode's counters must be back at
/// zero after the launch (its last chunk of each (batch row, head) resets them). With one key time for every row, logSumExp is
/// checked too, against the CPU's uncached forward over the first key-time rows. Tolerances:
/// <see cref="Tolerances.AttentionTensorCoreOutput"/> (tensor cores) or <see cref="Tolerances.Forward"/> for the output,
/// <see cref="Tolerances.Forward"/>(F32) for logSumExp.
/// </summary>
public static class CachedAttentionChecks
{
    private sealed record Shape(int B, int Tq, int Tmax, int H, int D)
    {
        public int QueryCount => B * Tq * H * D;
        public int CacheCount => B * Tmax * H * D;
    }

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        // Split-K decode (Tq <= 4).
        Uniform(DType.BF16, new(1, 1, 15, 2, 80), keyTime: 1),
        Uniform(DType.F16, new(2, 2, 64, 1, 16), keyTime: 17),
        Uniform(DType.BF16, new(1, 3, 127, 2, 32), keyTime: 64),
        Uniform(DType.F16, new(1, 4, 300, 1, 128), keyTime: 129),
        Uniform(DType.BF16, new(2, 1, 300, 2, 96), keyTime: 300),
        Uniform(DType.F16, new(1, 2, 16, 3, 64), keyTime: 16),
        Uniform(DType.BF16, new(1, 4, 129, 1, 80), keyTime: 127, scale: 4f),
        Uniform(DType.BF16, new(2, 3, 17, 1, 48), keyTime: 17),
        Uniform(DType.F16, new(1, 1, 129, 2, 80), keyTime: 127),
        PerRow(DType.BF16, new(3, 1, 129, 2, 80), [1, 129, 64]),
        PerRow(DType.F16, new(4, 4, 300, 1, 32), [300, 3, 17, 301]),
        PerRow(DType.BF16, new(3, 2, 64, 2, 128), [15, 65, 16]),
        // The tensor-core forward through the cache (Tq > 4: chunked prompts, batched decoding).
        Uniform(DType.BF16, new(2, 5, 70, 2, 80), keyTime: 70),
        Uniform(DType.F16, new(1, 17, 300, 1, 16), keyTime: 129),
        Uniform(DType.BF16, new(1, 64, 127, 2, 96), keyTime: 127),
        Uniform(DType.F16, new(2, 15, 16, 1, 128), keyTime: 15),
        Uniform(DType.BF16, new(1, 300, 300, 1, 32), keyTime: 300),
        Uniform(DType.F16, new(1, 9, 64, 2, 48), keyTime: 64),
        PerRow(DType.BF16, new(3, 16, 129, 2, 64), [16, 129, 300]),
        PerRow(DType.F16, new(2, 65, 300, 1, 80), [127, 300]),
        // SIMT: f32 (the reference kernels) and a head dim the tensor cores do not take.
        Uniform(DType.F32, new(2, 1, 64, 3, 80), keyTime: 40),
        Uniform(DType.F32, new(1, 9, 70, 2, 80), keyTime: 50),
        Uniform(DType.F32, new(2, 33, 48, 2, 7), keyTime: 33),
        Uniform(DType.BF16, new(2, 1, 40, 2, 7), keyTime: 37),
        PerRow(DType.F32, new(3, 1, 48, 2, 80), [5, 40, 17]),
        PerRow(DType.F32, new(3, 4, 48, 2, 7), [4, 48, 33]),
        PerRow(DType.BF16, new(2, 3, 70, 3, 24), [70, 9]),
        PerRow(DType.F32, new(4, 2, 40, 2, 80), [12, 41, 1, 40]),
    ];

    private static AttentionChoice Choice(DType dtype, Shape s) => AttentionKernels.Choose(dtype, s.Tq, s.Tmax, s.D, cached: true, default, default, default);

    private static string[] Kernels(DType dtype, Shape s) => [Choice(dtype, s).Kernel(dtype, cached: true)];

    /// <summary>One key time for every batch row: the output, and logSumExp against the CPU's forward over those rows.</summary>
    private static DeviceCheck Uniform(DType dtype, Shape s, int keyTime, float scale = 1.5f)
    {
        string[] kernels = Kernels(dtype, s);
        return new($"{kernels[0]} B {s.B} Tq {s.Tq} H {s.H} D {s.D} Tmax {s.Tmax} key time {keyTime}{(scale != 1.5f ? $" inputs x{scale}" : "")}", kernels,
            device => Run(device, dtype, s, [.. Enumerable.Repeat(keyTime, s.B)], scale, checkLogSumExp: true));
    }

    /// <summary>Each batch row its own key time; one outside [Tq, Tmax] expects NaN rows.</summary>
    private static DeviceCheck PerRow(DType dtype, Shape s, int[] keyTimes)
    {
        string[] kernels = Kernels(dtype, s);
        return new($"{kernels[0]} per row B {s.B} Tq {s.Tq} H {s.H} D {s.D} Tmax {s.Tmax} key times [{string.Join(", ", keyTimes)}]", kernels,
            device => Run(device, dtype, s, keyTimes, 1.5f, checkLogSumExp: false));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, Shape s, int[] keyTimes, float scale, bool checkLogSumExp)
    {
        int seed = 4100 + s.Tq * 31 + s.Tmax * 7 + s.D;
        float[] q = TestData.Uniform(s.QueryCount, seed, scale), k = TestData.Uniform(s.CacheCount, seed + 1, scale), v = TestData.Uniform(s.CacheCount, seed + 2);
        bool[] bad = keyTimes.Select(t => t < s.Tq || t > s.Tmax).ToArray();
        int rowElements = s.H * s.D;
        // Rows at or past each batch row's key time hold NaN (bad rows keep their data: they read nothing).
        for (int i = 0; i < k.Length; i++)
        {
            int b = i / (s.Tmax * rowElements);
            if (!bad[b] && i / rowElements % s.Tmax >= keyTimes[b]) k[i] = v[i] = float.NaN;
        }
        var choice = Choice(dtype, s);
        using var dq = DeviceBuffer.Upload(device, dtype, q);
        using var dk = DeviceBuffer.Upload(device, dtype, k);
        using var dv = DeviceBuffer.Upload(device, dtype, v);
        using var times = DeviceBuffer.Upload(device, keyTimes);
        using var output = DeviceBuffer.Allocate(device, dtype, s.QueryCount);
        using var lse = DeviceBuffer.Allocate(device, DType.F32, s.B * s.H * s.Tq);
        long partialsBytes = AttentionKernels.DecodePartialsBytes(choice, s.B, s.Tq, s.H, s.D);
        using var partials = partialsBytes > 0 ? DeviceBuffer.Allocate(device, DType.F32, partialsBytes / sizeof(float)) : null;
        // The split-K decode's counters start at zero and must be left at zero (a captured graph replays on them).
        using var counters = partialsBytes > 0 ? DeviceBuffer.Upload(device, new int[AttentionKernels.DecodeCountersBytes(choice, s.B, s.H) / sizeof(int)]) : null;
        AttentionKernels.CachedAttention(device, dtype, dq.Pointer, dk.Pointer, dv.Pointer, times.Pointer, output.Pointer, s.B, s.Tq, s.Tmax, s.H, s.D,
            logSumExp: lse.Pointer, partials: partials?.Pointer ?? DevicePtr.Null, counters: counters?.Pointer ?? DevicePtr.Null);
        int[] countersLeft = counters?.DownloadInt32() ?? [];

        using var cpu = new CpuReference();
        int[] cpuTimes = keyTimes.Select((t, b) => bad[b] ? s.Tmax : t).ToArray(); // the CPU throws for a bad time
        using var cq = cpu.Stored(dtype, q, s.B, s.Tq, s.H, s.D);
        using var ck = cpu.Stored(dtype, k, s.B, s.Tmax, s.H, s.D);
        using var cv = cpu.Stored(dtype, v, s.B, s.Tmax, s.H, s.D);
        using var ct = cpu.Backend.FromBytes(MemoryMarshal.AsBytes(cpuTimes.AsSpan()), DType.I32, [s.B], DType.I32);
        using var co = AttentionOp.Cached(cq, ck, cv, ct);
        float[] expected = cpu.CastTo(dtype, co);
        for (int b = 0; b < s.B; b++)
            if (bad[b]) expected.AsSpan(b * s.Tq * rowElements, s.Tq * rowElements).Fill(float.NaN);
        double valueBound = v.Where(float.IsFinite).Select(Math.Abs).DefaultIfEmpty(0).Max();
        var tolerance = choice.Kind == AttentionKernel.Simt ? Tolerances.Forward(dtype) : Tolerances.AttentionTensorCoreOutput(dtype, valueBound);
        var outputResult = tolerance.Compare("output", output.Download(), expected);
        if (countersLeft.Any(c => c != 0))
            outputResult = new CheckResult(0, double.PositiveInfinity, $"counters left at [{string.Join(", ", countersLeft)}], not reset to zero");
        if (!checkLogSumExp) return outputResult;

        // The uncached forward over each row's first keyTime rows puts query i at keyTime - Tq + i too, and saves lse.
        int keyTime = keyTimes[0];
        float[] kRows = new float[s.B * keyTime * rowElements], vRows = new float[kRows.Length];
        for (int b = 0; b < s.B; b++)
        {
            k.AsSpan(b * s.Tmax * rowElements, keyTime * rowElements).CopyTo(kRows.AsSpan(b * keyTime * rowElements));
            v.AsSpan(b * s.Tmax * rowElements, keyTime * rowElements).CopyTo(vRows.AsSpan(b * keyTime * rowElements));
        }
        using var fk = cpu.Stored(dtype, kRows, s.B, keyTime, s.H, s.D);
        using var fv = cpu.Stored(dtype, vRows, s.B, keyTime, s.H, s.D);
        using var fo = AttentionOp.Forward(cq, fk, fv, out var flse);
        using (flse)
            return CheckResult.Combine(outputResult, Tolerances.Forward(DType.F32).Compare("logSumExp", lse.Download(), flse.ToSingleArray()));
    }
}
