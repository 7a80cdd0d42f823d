using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The split-K decode's launches depend on (B, H, Tq, Tmax) only (kernels/attention_decode.cu): captured once in a CUDA
/// graph on the emulated device, the same graph replayed as each row's key time grows (device data, written between
/// replays) gives the CPU's cached attention at every step, chunk boundaries included, and leaves its chunk counters at
/// zero for the next replay.
/// </summary>
[TestFixture, Category("Emulated")]
public class SplitKDecodeGraphTests
{
    [Test]
    public void OneCapturedDecodeReplaysAtEveryKeyTime()
    {
        const int batch = 2, heads = 2, headDim = 80, capacity = 129;
        const DType dtype = DType.BF16;
        float[] q = TestData.Uniform(batch * heads * headDim, 51, 1.5f);
        float[] k = TestData.Uniform(batch * capacity * heads * headDim, 52, 1.5f), v = TestData.Uniform(k.Length, 53);
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        using var dq = DeviceBuffer.Upload(device, dtype, q);
        using var dk = DeviceBuffer.Upload(device, dtype, k);
        using var dv = DeviceBuffer.Upload(device, dtype, v);
        using var times = DeviceBuffer.Upload(device, [1, 1]);
        using var output = DeviceBuffer.Allocate(device, dtype, q.Length);
        var choice = AttentionKernels.Choose(dtype, 1, capacity, headDim, cached: true, dq.Pointer, dk.Pointer, dv.Pointer);
        Assert.That(choice.Kind, Is.EqualTo(AttentionKernel.SplitKDecode));
        using var partials = DeviceBuffer.Allocate(device, DType.F32, AttentionKernels.DecodePartialsBytes(choice, batch, 1, heads, headDim) / sizeof(float));
        using var counters = DeviceBuffer.Upload(device, new int[AttentionKernels.DecodeCountersBytes(choice, batch, heads) / sizeof(int)]);

        device.BeginCapture(stream);
        AttentionKernels.CachedAttention(device, dtype, dq.Pointer, dk.Pointer, dv.Pointer, times.Pointer, output.Pointer, batch, 1, capacity, heads, headDim,
            stream, partials: partials.Pointer, counters: counters.Pointer);
        var graph = device.EndCapture(stream);

        using var cpu = new CpuReference();
        using var cq = cpu.Stored(dtype, q, batch, 1, heads, headDim);
        using var ck = cpu.Stored(dtype, k, batch, capacity, heads, headDim);
        using var cv = cpu.Stored(dtype, v, batch, capacity, heads, headDim);
        var tolerance = Tolerances.AttentionTensorCoreOutput(dtype, v.Max(Math.Abs));
        foreach (int[] keyTimes in new[] { new[] { 1, 17 }, [63, 64], [65, 100], [128, 129] })
        {
            device.CopyToDevice(times.Pointer, MemoryMarshal.AsBytes(keyTimes.AsSpan()), stream);
            device.LaunchGraph(graph, stream);
            using var ct = cpu.Backend.FromBytes(MemoryMarshal.AsBytes(keyTimes.AsSpan()), DType.I32, [batch], DType.I32);
            using var co = AttentionOp.Cached(cq, ck, cv, ct);
            var result = tolerance.Compare("output", output.Download(stream), cpu.CastTo(dtype, co));
            Assert.That(result.Passed, $"key times [{string.Join(", ", keyTimes)}]: {result}");
            Assert.That(counters.DownloadInt32(stream), Is.All.Zero, "the last chunk of each (batch row, head) resets its counter for the next replay");
        }
        device.DestroyGraph(graph);
    }
}
