using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.Decoding;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Backends.Ops.Residual;
using Phi2Native.Backends.Ops.Qkv;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// The launch every kernel gets from its launcher at Phi-2's shapes (C 2560, H 32, D 80, rotary 32, T 2048,
/// V 51200, fc1 10240; B 4 for training, 1 for decoding), found by calling every launcher on a
/// <see cref="LaunchRecorder"/>. Where a kernel is launched several ways, the launch asking for the most dynamic
/// shared memory (then the largest block) stands for it. The resource table (kernels/resources.tsv) takes each
/// kernel's block and dynamic shared memory from here; a test checks that every kernel has one.
/// </summary>
internal static class Phi2LaunchShapes
{
    private const int C = 2560, H = 32, D = 80, RotaryDim = 32, T = 2048, V = 51200, Inner = 10240, B = 4, Rows = B * T, LoraRank = 16;
    private static readonly DType[] AllFloat = [DType.F32, DType.BF16, DType.F16];
    private static readonly DType[] F32Bf16 = [DType.F32, DType.BF16];

    /// <summary>Each kernel's launch, by entry point.</summary>
    public static IReadOnlyDictionary<string, RecordedLaunchShape> ByKernel { get; } = Record();

    private static Dictionary<string, RecordedLaunchShape> Record()
    {
        var device = new LaunchRecorder();
        // Distinct, aligned made-up addresses 1 TiB apart, so no two buffers overlap: launchers check alignment and
        // aliasing, and never dereference.
        ulong next = 0;
        DevicePtr P() => new(next += 1UL << 40);

        foreach (var dtype in AllFloat)
        {
            // The fused q/k/v split: training (no cache), a decode step into the cache, and the backward.
            QkvKernels.SplitRotary(device, dtype, P(), P(), P(), P(), DevicePtr.Null, B, T, H, D, RotaryDim, 10000, 0);
            QkvKernels.SplitRotary(device, dtype, P(), P(), P(), P(), P(), B, 1, H, D, RotaryDim, 10000, T);
            QkvKernels.SplitRotaryBackward(device, dtype, P(), P(), P(), P(), DevicePtr.Null, B, T, H, D, RotaryDim, 10000);
            ElementwiseKernels.Add(device, dtype, P(), P(), P(), (long)Rows * C);
            ElementwiseKernels.Scale(device, dtype, P(), P(), 0.5f, (long)Rows * C);
            DropoutKernels.Dropout(device, dtype, P(), P(), 0.1, 7, (long)Rows * C);
            DropoutKernels.DropoutBackward(device, dtype, P(), P(), 0.1, 7, (long)Rows * C);
            ParallelResidualKernels.ParallelResidual(device, dtype, P(), P(), P(), P(), 0.1, 7, 8, (long)Rows * C, default);
            ParallelResidualKernels.ParallelResidualBackward(device, dtype, P(), P(), P(), 0.1, 7, 8, (long)Rows * C, default);
            // LoRA r 16 on fc1 (in C, out 10240) and fc2 (in 10240, out C): the widest of each kernel's launches.
            LoraKernels.LoraDown(device, dtype, P(), P(), P(), 0.05, 7, Rows, Inner, LoraRank, default);
            LoraKernels.LoraUp(device, dtype, P(), P(), P(), P(), 2.0, Rows, Inner, LoraRank, default);
            LoraKernels.LoraUpGelu(device, dtype, P(), P(), P(), P(), P(), 2.0, Rows, Inner, LoraRank, default);
            LoraKernels.LoraUpBackward(device, dtype, P(), P(), P(), 2.0, Rows, Inner, LoraRank, default);
            LoraKernels.LoraDownBackward(device, dtype, P(), P(), P(), 0.05, 7, Rows, Inner, LoraRank, default);
            LoraKernels.GradientOfA(device, dtype, P(), P(), P(), 0.05, 7, Rows, Inner, LoraRank, default);
            // LoRA r 16 on each of q, k and v over the fused [N, 3 C] projection.
            var qkv = new LoraQkvKernels.Modules();
            for (int m = 0; m < 3; m++) qkv.Set(m, LoraRank, P(), P(), 0.05, 7UL + (ulong)m, 2.0);
            LoraQkvKernels.LoraQkvDown(device, dtype, P(), P(), qkv, Rows, C, default);
            LoraQkvKernels.LoraQkvUp(device, dtype, P(), P(), P(), qkv, Rows, C, default);
            LoraQkvKernels.LoraQkvUpBackward(device, dtype, P(), P(), qkv, Rows, C, default);
            (qkv.Grad0, qkv.Grad1, qkv.Grad2) = (P(), P(), P());
            LoraQkvKernels.WeightGradient(device, dtype, P(), P(), qkv, ofA: true, Rows, C, default);
            LoraQkvKernels.LoraQkvDownBackward(device, dtype, P(), P(), qkv, accumulate: true, Rows, C, default);
            GeluKernels.GeluNew(device, dtype, P(), P(), (long)Rows * Inner);
            GeluKernels.GeluNewBackward(device, dtype, P(), P(), P(), (long)Rows * Inner);
            GeluKernels.BiasGeluNew(device, dtype, P(), P(), P(), P(), Rows, Inner);
            GeluKernels.BiasGeluNewBackward(device, dtype, P(), P(), P(), P(), Rows, Inner);
            ReductionKernels.RowSum(device, dtype, P(), P(), Rows, C);
            ReductionKernels.RowMax(device, dtype, P(), P(), Rows, C);
            DecodeNextKernels.DecodeNext(device, dtype, P(), P(), P(), P(), 1, V);
            OptimizerKernels.ChunkSumOfSquares(device, dtype, P(), P(), P(), Inner * C / OptimizerKernels.ChunkElements, default, (long)Inner * C, 1);
            foreach (var to in AllFloat)
                if (to != dtype) CastKernels.Cast(device, dtype, to, P(), P(), (long)Inner * C);
        }
        ElementwiseKernels.Accumulate(device, DType.F32, P(), P(), (long)Inner * C);
        ElementwiseKernels.AccumulateScaled(device, DType.F32, P(), P(), P(), (long)V * C);
        CrossEntropyKernels.CrossEntropyPickedSum(device, P(), P(), P(), P(), P(), P(), Rows, V);
        OptimizerKernels.StepStatus(device, P(), P(), 6 * 32, P(), 1, 1.0, P(), P(), P(), default, Inner * C / OptimizerKernels.ChunkElements);
        OptimizerKernels.AdamWChunks(device, P(), P(), Inner * C / OptimizerKernels.ChunkElements, P(), default, (long)Inner * C, 1);

        foreach (var dtype in F32Bf16)
        {
            LayerNormKernels.LayerNorm(device, dtype, P(), P(), P(), 1e-5f, P(), P(), P(), Rows, C);
            LayerNormKernels.LayerNormBackward(device, dtype, P(), P(), P(), P(), P(), P(), P(), P(), Rows, C);
            CrossEntropyKernels.CrossEntropy(device, dtype, P(), P(), P(), P(), Rows, V);
            CrossEntropyKernels.CrossEntropySum(device, dtype, P(), P(), P(), P(), P(), P(), Rows, V);
            CrossEntropyKernels.CrossEntropyBackward(device, dtype, P(), P(), P(), P(), P(), P(), Rows, V);
            // LinearCrossEntropyOp's chunk at Phi-2's shapes: 2048 rows in bf16, 1171 in fp32 (its RowsPerChunk).
            CrossEntropyKernels.CrossEntropyChunk(device, dtype, P(), P(), P(), P(), Rows, LinearCrossEntropyOp.RowsPerChunk(Rows, V, dtype), V);
            ElementwiseKernels.ScaleBy(device, dtype, P(), P(), P(), (long)Rows * C);
            EmbeddingKernels.Embedding(device, dtype, dtype, P(), P(), P(), Rows, V, C);
            EmbeddingKernels.EmbeddingBackward(device, dtype, P(), P(), P(), Rows, V, C);
            RotaryKernels.Rotary(device, dtype, P(), P(), DevicePtr.Null, B, T, H, D, RotaryDim, 10000);
            RotaryKernels.RotaryBackward(device, dtype, P(), P(), DevicePtr.Null, B, T, H, D, RotaryDim, 10000);
            RotaryKernels.Rotary(device, dtype, P(), P(), P(), B, 1, H, D, RotaryDim, 10000);
            CacheKernels.CacheWrite(device, dtype, P(), P(), P(), 1, T, H, D, T);
            CacheKernels.CacheWrite(device, dtype, P(), P(), P(), B, 1, H, D, T);
            TransposeKernels.Transpose(device, dtype, P(), P(), C, Inner);
            AttentionKernels.Attention(device, dtype, P(), P(), P(), P(), P(), B, T, T, H, D);
            // q 8 bytes past 16-byte alignment: the SIMT forward that AttentionKernels falls back to (bf16 otherwise runs attention_mma).
            AttentionKernels.Attention(device, dtype, P().Offset(8), P(), P(), P(), P(), B, T, T, H, D);
            AttentionKernels.AttentionBackward(device, dtype, P(), P(), P(), P(), P(), P(), P(), P(), P(), P(), B, T, T, H, D);
            // Decoding (split-K for bf16) at batch 1 and B, and a prefill through the cache.
            AttentionKernels.CachedAttention(device, dtype, P(), P(), P(), P(), P(), 1, 1, T, H, D, partials: P(), counters: P());
            AttentionKernels.CachedAttention(device, dtype, P(), P(), P(), P(), P(), B, 1, T, H, D, partials: P(), counters: P());
            AttentionKernels.CachedAttention(device, dtype, P(), P(), P(), P(), P(), 1, T, T, H, D);
            // q 8 bytes past 16-byte alignment: the SIMT cached_attention (bf16 otherwise decodes split-K or runs cached_attention_mma).
            AttentionKernels.CachedAttention(device, dtype, P().Offset(8), P(), P(), P(), P(), B, 1, T, H, D);
        }
        // The tensor-core kernels of every head-dim bound (Phi-2's D = 80 above; the others at D = their bound), and f16's.
        foreach (var dtype in new[] { DType.BF16, DType.F16 })
            foreach (int headDim in new[] { 32, 64, 80, 128 })
            {
                if (dtype == DType.BF16 && headDim == D) continue;
                int heads = H * D / headDim;
                AttentionKernels.Attention(device, dtype, P(), P(), P(), P(), P(), B, T, T, heads, headDim);
                AttentionKernels.CachedAttention(device, dtype, P(), P(), P(), P(), P(), 1, 1, T, heads, headDim, partials: P(), counters: P());
                AttentionKernels.CachedAttention(device, dtype, P(), P(), P(), P(), P(), 1, T, T, heads, headDim);
            }
        // dO 8 bytes past 16-byte alignment: the SIMT backward that AttentionKernels falls back to (bf16 otherwise runs
        // attention_mma_backward_bf16_d80); and the tensor-core backward's other head-dim bounds (D 32, 64, 128 at Phi-2's
        // C = H * D), in bf16 and f16.
        AttentionKernels.AttentionBackward(device, DType.BF16, P().Offset(8), P(), P(), P(), P(), P(), P(), P(), P(), P(), B, T, T, H, D);
        foreach (var dtype in new[] { DType.BF16, DType.F16 })
            foreach (int headDim in new[] { 32, 64, 80, 128 })
                AttentionKernels.AttentionBackward(device, dtype, P(), P(), P(), P(), P(), P(), P(), P(), P(), P(), B, T, T, C / headDim, headDim);
        EmbeddingKernels.Embedding(device, DType.F32, DType.BF16, P(), P(), P(), Rows, V, C);
        EmbeddingKernels.Embedding(device, DType.BF16, DType.F32, P(), P(), P(), Rows, V, C);
        foreach (string kernel in MmaChecks.Kernels)
            ((IDeviceApi)device).Launch(kernel, MmaChecks.Grid, MmaChecks.Block, 0, default, []);

        return device.Launches
            .GroupBy(l => l.Kernel, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.OrderByDescending(l => l.DynamicSharedBytes).ThenByDescending(l => l.Block.Count).First(),
                StringComparer.Ordinal);
    }
}
