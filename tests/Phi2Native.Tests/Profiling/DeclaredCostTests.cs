using NUnit.Framework;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;
using Phi2Native.Hosting;
using Phi2Native.Profiling;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Profiling;

/// <summary>
/// The launchers' declared costs are checked, not trusted: the emulator counts the bytes each launch really reads and
/// writes (every load and store of kernel code, instrumented by g++, that lands in device memory; each byte once per
/// direction), and every launch of the tiny model's train, lora, prefill and decode steps is compared with its
/// launcher's declaration. A kernel may declare tensor-core flops only where its SASS has tensor-core instructions.
/// </summary>
[TestFixture]
public class DeclaredCostTests
{
    // Declarations that are upper bounds, because what the kernel reads depends on device data the launcher cannot see:
    // a repeated id's table row is read once; each row's key time (a KV cache's rows may hold different lengths); an
    // ignored row (the last position of each sequence in a causal-LM loss) reads no logits, lse or target logit; a
    // dropped element's branch value is not read. The split-K decode's chunks past a row's key time exit at once (no K, V
    // read, no partial written) and its combining blocks read only the chunks below the key time: it declares every chunk.
    private static readonly HashSet<string> UpperBounds =
        ["embedding_f32", "embedding_backward_f32", "cached_attention_f32", "cross_entropy_sum_f32", "cross_entropy_picked_sum", "cross_entropy_backward_f32",
         "parallel_residual_f32", "cached_attention_mma_bf16_d80", "attention_decode_bf16_d80"];

    // Tails: a few bytes of a launch's memory that its declaration leaves out or counts twice (a scalar, the last
    // partial vector): 1 % of the declaration or 16 bytes, whichever is more.
    private static bool Close(long counted, long declared) => Math.Abs(counted - declared) <= Math.Max(16, declared / 100);

    [Test, Category("Emulated")]
    public void EveryLaunchOfTheTinyModelMovesTheBytesItsLauncherDeclares()
    {
        var problems = new List<string>();
        var seen = new HashSet<string>();
        // fp32 reaches the SIMT attention, bf16's prefill and decode (head dim 80) the cached tensor-core forward and the split-K decode.
        foreach (var (what, dtype) in new[]
                 {
                     (ProfileWorkload.Train, DType.F32), (ProfileWorkload.Lora, DType.F32), (ProfileWorkload.Prefill, DType.F32),
                     (ProfileWorkload.Decode, DType.F32), (ProfileWorkload.Prefill, DType.BF16), (ProfileWorkload.Decode, DType.BF16),
                 })
        {
            var report = ProfileRun.Run(new ProfileOptions
            {
                Device = DeviceChoice.Emulated, What = what, Layers = 1, Batch = 2, Sequence = 8, CountTraffic = true, DType = dtype,
            });
            foreach (var e in report.Events.Where(e => e.Kind == ProfileEventKind.Kernel))
            {
                seen.Add(e.Name);
                var (read, written) = e.CountedBytes ?? throw new AssertionException($"{e.Name} was not counted");
                string where = $"{what} {dtype} {e.Name} ({e.Module}, {e.Detail})";
                if (!e.Cost.IsDeclared) { problems.Add($"{where}: no declaration"); continue; }
                bool ok = UpperBounds.Contains(e.Name)
                    ? read <= e.Cost.BytesRead + 16 && written <= e.Cost.BytesWritten + 16
                    : Close(read, e.Cost.BytesRead) && Close(written, e.Cost.BytesWritten);
                if (!ok) problems.Add($"{where}: counted {read} read, {written} written; declared {e.Cost.BytesRead}, {e.Cost.BytesWritten}");
            }
        }
        Assert.That(problems.Distinct().ToList(), Is.Empty);
        Assert.That(seen, Has.Count.GreaterThanOrEqualTo(20), "the four workloads reach most kernels: " + string.Join(", ", seen));
    }

    [TestCase(true, true, true)]
    [TestCase(false, false, true)]
    [TestCase(false, true, false)]
    [TestCase(true, false, false)]
    [Category("Emulated")]
    public void TheTensorCoreAttentionBackwardMovesTheBytesItDeclares(bool wantDq, bool wantDk, bool wantDv)
    {
        // The tiny model's workloads run in f32 (the SIMT kernels): the bf16 tensor-core backward at D 80, Tq < Tk, each
        // gradient set the launcher distinguishes (delta is read only with dq or dk).
        const int B = 2, Tq = 20, Tk = 50, H = 2, D = 80;
        var dtype = DType.BF16;
        using var device = new EmulatedDevice();
        int queries = B * Tq * H * D, keys = B * Tk * H * D, rows = B * H * Tq;
        using var dOutput = DeviceBuffer.Upload(device, dtype, TestData.Uniform(queries, 51));
        using var q = DeviceBuffer.Upload(device, dtype, TestData.Uniform(queries, 52));
        using var k = DeviceBuffer.Upload(device, dtype, TestData.Uniform(keys, 53));
        using var v = DeviceBuffer.Upload(device, dtype, TestData.Uniform(keys, 54));
        using var output = DeviceBuffer.Allocate(device, dtype, queries);
        using var logSumExp = DeviceBuffer.Allocate(device, DType.F32, rows);
        AttentionKernels.Attention(device, dtype, q.Pointer, k.Pointer, v.Pointer, output.Pointer, logSumExp.Pointer, B, Tq, Tk, H, D);
        using var delta = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var dq = DeviceBuffer.Allocate(device, dtype, queries);
        using var dk = DeviceBuffer.Allocate(device, dtype, keys);
        using var dv = DeviceBuffer.Allocate(device, dtype, keys);
        var recorder = ProfileRecorder.Start(countTraffic: true);
        using (recorder)
            AttentionKernels.AttentionBackward(device, dtype, dOutput.Pointer, q.Pointer, k.Pointer, v.Pointer, output.Pointer,
                logSumExp.Pointer, wantDq || wantDk ? delta.Pointer : default, wantDq ? dq.Pointer : default, wantDk ? dk.Pointer : default,
                wantDv ? dv.Pointer : default, B, Tq, Tk, H, D);
        var backward = recorder.Events.Where(e => e.Name == "attention_mma_backward_bf16_d80").ToList();
        Assert.That(backward, Has.Count.EqualTo(1), "the tensor-core backward ran once");
        var (read, written) = backward[0].CountedBytes ?? throw new AssertionException("not counted");
        Assert.That(Close(read, backward[0].Cost.BytesRead), Is.True, $"counted {read} read, declared {backward[0].Cost.BytesRead}");
        Assert.That(Close(written, backward[0].Cost.BytesWritten), Is.True, $"counted {written} written, declared {backward[0].Cost.BytesWritten}");
        var cost = backward[0].Cost;
        Assert.That(cost.TensorCoreFlops, Is.GreaterThanOrEqualTo(9 * cost.SimtFlops), "at least 90 % of the flops on tensor cores");
    }

    [Test]
    public void OnlyKernelsWithTensorCoreInstructionsMayDeclareTensorCoreFlops()
    {
        // resources.tsv: architecture, kernel, ..., tensor_core_instructions (column 14).
        var withTensorCores = File.ReadLines(Path.Combine(Fixtures.RepositoryRoot, "kernels", "resources.tsv"))
            .Where(line => line.StartsWith("sm_90\t", StringComparison.Ordinal))
            .Select(line => line.Split('\t'))
            .Where(cells => int.Parse(cells[13], System.Globalization.CultureInfo.InvariantCulture) > 0)
            .Select(cells => cells[1]).ToHashSet();
        var offenders = DeviceChecks.Phi2LaunchShapes.ByKernel.Values
            .Where(l => l.Cost.TensorCoreFlops > 0 && !withTensorCores.Contains(l.Kernel))
            .Select(l => l.Kernel).Distinct().ToList();
        Assert.That(offenders, Is.Empty);
    }
}
