using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// Planted bugs in kernel files must fail the device checks that the real kernels pass (<see cref="EmulatedDeviceCheckTests"/>
/// runs those): g++ builds one emulator from the edited files at run time (about 20 s), and each named check must fail
/// on it. A kernel family whose checks could not catch a plausible bug gets one here.
/// </summary>
[TestFixture, Category("Emulated")]
public class PlantedKernelBugTests : Support.TemporaryDirectoryTest
{
    /// <summary>One planted bug: the line replaced in a kernel file, and the checks that must fail because of it.</summary>
    private sealed record PlantedBug(string File, string Line, string Planted, string What, params string[] FailingChecks);

    private static readonly PlantedBug[] Bugs =
    [
        new("optimizer.cu", "if (status != nullptr && status->skip) return;", "// planted: the verdict is ignored",
            "an update that ignores the status's verdict", "adamw_chunks_f32: a skipped step changes nothing"),
        new("optimizer.cu", "for (int i = (int)threadIdx.x; i < chunk.count; i += (int)blockDim.x)",
            "for (int i = (int)threadIdx.x; i < chunk.count; i += 2 * (int)blockDim.x) // planted",
            "chunk sums over every other element", "gradient check f32/bf16/f16, nulls, 2 losses, clipping"),
        new("decode.cu", "return value > best || (value == best && id < best_id);", "return value > best || (value == best && id >= best_id); // planted",
            "a tie that goes to the later id (the host sampler keeps the lower one)",
            "decode_next_f32 ties, NaN, -inf, last column", "decode_next_bf16 ties, NaN, -inf, last column"),
        new("residual.cu", "float dm = dropout_bits24(seed_m, i)", "float dm = dropout_bits24(seed_m ^ 1ull, i)",
            "the mlp branch's mask from another seed",
            "parallel_residual_f32 n=5127 p=0.1", "parallel_residual_bf16 n=5127 p=0.1"),
        new("lora.cu", "v = dropout_bits24(seed, index) >= threshold ? __fmul_rn(v, keep_scale) : 0.0f;",
            "v = dropout_bits24(seed ^ 1ull, index) >= threshold ? __fmul_rn(v, keep_scale) : 0.0f; // planted",
            "dA's regenerated mask from another seed than forward's",
            "lora backward f32 r=8 p=0.2 x [3, 13, 97] out 83"),
        // bf16's weight gradients run on tensor cores (lora_mma.cuh, shared by lora.cu and lora_qkv.cu).
        new("lora_mma.cuh", "lora_mma_load8(left, left_stride, mask_stride, n0 + r, c0 + 8 * part, rows, width, threshold, seed);",
            "lora_mma_load8(left, left_stride, mask_stride, n0 + r, c0 + 8 * part, rows, width, threshold, seed ^ 1ull); // planted",
            "dA's regenerated mask from another seed than forward's (tensor cores)",
            "lora backward bf16 r=64 p=0.2 x [3, 13, 97] out 83"),
        new("lora_qkv.cu", "float v = D::to_f32(mine[k]);", "float v = D::to_f32(staged[k]); // planted",
            "every warp of lora_qkv_down reads the block's first staged row of x instead of its own",
            "lora qkv f32 q r=8 k r=8 v r=8 p=0 x [3, 13, 83]", "lora qkv bf16 q r=16 k r=16 v r=16 p=0.2 x [3, 13, 83]"),
        new("lora.cu", "if (pre) pre[index] = h;", "if (pre) pre[index] = D::from_f32(gelu_new_f(D::to_f32(h))); // planted",
            "lora_up_gelu saves the activation where backward needs the pre-activation",
            "lora fc1+gelu (+backward) f32 r=16 p=0.2 x [3, 13, 97] W [83, 97]"),
        new("attention_mma.cu", "cp_async_wait_group<1>(); // this tile's group", "// planted: no wait for this tile's group",
            "a key tile read before its cp.async group is waited for",
            "attention_mma_f16_d64 B 1 Tq 129 Tk 129 H 1 D 64", "attention_mma_bf16_d32 B 1 Tq 300 Tk 300 H 1 D 16"),
        new("attention_mma.cu", "pf[j / 2][(j % 2) * 2 + 1] = Ops::pack(p2, p3);",
            "pf[j / 2][(j % 2) * 2 + 1] = Ops::pack(p0, p1); // planted",
            "P's A fragment with a wrong register (row g's probabilities where row g + 8's belong)",
            "attention_mma_bf16_d80 B 2 Tq 17 Tk 17 H 2 D 80", "attention_mma_f16_d32 B 2 Tq 64 Tk 64 H 2 D 32",
            "cached_attention_mma_f16_d32 B 1 Tq 17 H 1 D 16 Tmax 300 key time 129"),
        new("attention_decode.cu", "for (int s = 0; s < used; s++) sum += expf(first[s * chunk_stride + D] - M) * first[s * chunk_stride + d];",
            "for (int s = 0; s < used; s++) sum += first[s * chunk_stride + d]; // planted",
            "a combine that adds the chunks' partials without rescaling them to the common max",
            "attention_decode_bf16_d128 B 2 Tq 1 H 2 D 96 Tmax 300 key time 300",
            "attention_decode_f16_d32 per row B 4 Tq 4 H 1 D 32 Tmax 300 key times [300, 3, 17, 301]"),
        new("attention_decode.cu", "if (lane == 0) counters[pair] = 0; // no other block of this launch touches it again",
            "// planted: the counter is never reset",
            "the combining block leaves its (batch row, head) counter at the count instead of resetting it for the next launch",
            "attention_decode_bf16_d80 B 1 Tq 1 H 2 D 80 Tmax 15 key time 1",
            "attention_decode_bf16_d80 per row B 3 Tq 1 H 2 D 80 Tmax 129 key times [1, 129, 64]"),
        new("attention_decode.cu", "if (counted != used) return; // no barrier follows", "if (counted != 1) return; // planted",
            "the first chunk of a (batch row, head) to finish combines, before the others have written their partials",
            "attention_decode_bf16_d128 B 2 Tq 1 H 2 D 96 Tmax 300 key time 300", "attention_decode_f16_d80 B 1 Tq 1 H 2 D 80 Tmax 129 key time 127"),
        new("attention_decode.cu", "qf[kk][2] = load ? q_row[8 * kk + t + 4] : 0u;", "qf[kk][2] = load ? q_row[8 * kk + t] : 0u; // planted",
            "Q's A fragment with a wrong column index (columns 2t, 2t + 1 where 2t + 8, 2t + 9 belong)",
            "attention_decode_bf16_d80 B 1 Tq 1 H 2 D 80 Tmax 15 key time 1", "attention_decode_f16_d64 B 1 Tq 2 H 3 D 64 Tmax 16 key time 16"),
        new("attention_mma_backward.cu", "cp_async_wait_group<1>(); // this tile's group (and K's, V's)",
            "// planted: no wait for this query tile's group (",
            "a key block's query tile read before its cp.async group is waited for",
            "attention_mma_backward_bf16_d80 B 2 Tq 45 Tk 45 H 2 D 80 all gradients", "attention_mma_backward_f16_d128 B 1 Tq 64 Tk 300 H 1 D 96 dk and dv only"),
        new("attention_mma_backward.cu", "pf[1] = Ops::pack(p[2 * kk][2], p[2 * kk][3]);",
            "pf[1] = Ops::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]); // planted",
            "P^T's and dS's A fragment with a wrong register (row g's columns 8..15 where row g + 8's columns 0..7 belong)",
            "attention_mma_backward_f16_d32 B 2 Tq 64 Tk 64 H 2 D 32 dq only", "attention_mma_backward_f16_d80 B 1 Tq 16 Tk 300 H 1 D 80 dv only",
            "attention_mma_backward_bf16_d128 B 1 Tq 1 Tk 129 H 2 D 96 dk only"),
        new("qkv.cu", "long long kv_row = cached ? (long long)b * Tmax + offset + t : r;",
            "long long kv_row = cached ? (long long)b * Tmax + t : r; // planted",
            "k and v written at the cache's rows from 0 instead of each batch row's position",
            "qkv_split_rotary_f32 [3, 3, 3, 80] rd 32 into a cache of 9 at offsets [6, 0, 2]",
            "qkv_split_rotary_bf16 [3, 1, 3, 80] rd 32 into a cache of 2048 at offsets [2047, 0, 100]"),
        new("qkv.cu", "if (!bad) rotary_angles(cos_s, sin_s, offset + t, half, rd, theta, true);",
            "if (!bad) rotary_angles(cos_s, sin_s, offset + t, half, rd, theta, false); // planted",
            "dq and dk rotated forward again instead of back",
            "qkv_split_rotary_backward_f32 [2, 3, 3, 80] rd 32 no positions dq dk dv",
            "qkv_split_rotary_backward_bf16 [2, 3, 3, 80] rd 32 offsets [11, 2000] dq dk"),
        new("gelu.cu", "for (int lane = 0; lane < PHI2_BIAS_GELU_LANES; lane++) total += lane_sums[lane][t];",
            "for (int lane = 0; lane < PHI2_BIAS_GELU_LANES - 1; lane++) total += lane_sums[lane][t]; // planted",
            "dBias without the last row lane's sums (rows 31, 63, ...)",
            "bias_gelu_new_backward_f32 [70, 136] dX and dBias", "bias_gelu_new_backward_bf16 [70, 136] dBias only, dX null"),
        new("gelu.cu", "for (int e = 0; e < V; e++) o[e] = D::from_f32(gelu_new_f(v[e]));",
            "for (int e = 0; e < V; e++) o[e] = D::from_f32(gelu_new_f(v[0])); // planted",
            "every element of a 16-byte vector takes its first element's gelu_new",
            "gelu_new_bf16 n=1001", "LinearGelu(+Backward) bf16 x [7, 32] W [64, 32], bias epilogue + gelu_new fallback"),
        new("cross_entropy.cu", "picked[r] = ignored ? 0.0f : valid ? load<D>(row, t) : cross_entropy_nan();",
            "picked[r] = ignored ? 0.0f : valid ? load<D>(row, t > 0 ? t - 1 : t) : cross_entropy_nan(); // planted",
            "the chunk gathers the target's neighbour's logit for the loss",
            "cross_entropy_chunk_f32 [7, 1003] of a loss counting 9", "cross_entropy_chunk_bf16 [7, 1003] of a loss counting 9"),
        new("elementwise.cu", "if (i < n) y[i] = __fadd_rn(y[i], __fmul_rn(*alpha, x[i]));", "if (i < n) y[i] = __fmul_rn(*alpha, x[i]); // planted",
            "the scaled gradient written over the accumulator instead of added to it", "accumulate_scaled_f32 n=1001"),
        new("layernorm.cu", "store<D>(dxr, c, accumulate ? __fadd_rn(load<D>(dxr, c), v) : v);", "store<D>(dxr, c, accumulate ? v : v); // planted",
            "dX written over the residual stream's pending gradient instead of added to it",
            "layernorm_backward_f32 [3, 2561] dX only, others null, dX added (+=)",
            "layernorm_backward_bf16 [4, 80] all gradients, 3 blocks, dX added (+=)"),
    ];

    [Test]
    public void TheDeviceChecksCatchEveryPlantedBug()
    {
        string folder = Path.Combine(Temp, "kernels");
        Directory.CreateDirectory(folder);
        foreach (var file in Bugs.Select(b => b.File).Distinct())
        {
            string source = file.EndsWith(".cuh", StringComparison.Ordinal)
                ? KernelSourceCatalog.Embedded.Headers.Single(h => h.Name == file).Text
                : KernelSourceCatalog.Embedded.SourceOf(file);
            foreach (var bug in Bugs.Where(b => b.File == file))
            {
                Assert.That(source, Does.Contain(bug.Line), $"{file}: the line this test plants a bug in");
                source = source.Replace(bug.Line, bug.Planted, StringComparison.Ordinal);
            }
            File.WriteAllText(Path.Combine(folder, file), source);
        }
        var options = new KernelSourceOptions { Directory = folder, Setting = "PHI2NATIVE_KERNEL_SOURCES" };
        var checks = DeviceCheckCatalog.All.ToDictionary(c => c.Name);
        using var device = EmulatedDevice.Open(options, KernelCacheOptions.InDirectory(Path.Combine(Temp, "cache")));
        Assert.Multiple(() =>
        {
            foreach (var bug in Bugs)
                foreach (var name in bug.FailingChecks)
                {
                    Assert.That(checks, Does.ContainKey(name), "a check this test names");
                    var result = checks[name].Run(device);
                    Assert.That(result.Passed, Is.False, $"{bug.File}, {bug.What}: '{name}' {result}");
                }
        });
    }
}
