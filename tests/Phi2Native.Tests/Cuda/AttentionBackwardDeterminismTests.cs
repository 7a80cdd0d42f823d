using NUnit.Framework;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The tensor-core attention backward (kernels/attention_mma_backward.cu) is deterministic: no atomics, each gradient element
/// summed by one warp in a fixed order, so two runs on the same inputs write the same bytes, whatever the gradient buffers
/// held before. Its closeness to the CPU is the device checks' (AttentionChecks); this pins the bytes.
/// </summary>
[TestFixture, Category("Emulated")]
public class AttentionBackwardDeterminismTests
{
    [TestCase(DType.BF16, 2, 70, 70, 2, 80)]
    [TestCase(DType.BF16, 1, 33, 97, 1, 128)]
    [TestCase(DType.F16, 1, 40, 40, 2, 32)]
    public void RunningTheBackwardTwiceWritesTheSameBytes(DType dtype, int batch, int queryTime, int keyTime, int heads, int headDim)
    {
        using var device = new EmulatedDevice();
        int queries = batch * queryTime * heads * headDim, keys = batch * keyTime * heads * headDim, rows = batch * heads * queryTime;
        using var dOutput = DeviceBuffer.Upload(device, dtype, TestData.Uniform(queries, 41));
        using var q = DeviceBuffer.Upload(device, dtype, TestData.Uniform(queries, 42, 1.5f));
        using var k = DeviceBuffer.Upload(device, dtype, TestData.Uniform(keys, 43, 1.5f));
        using var v = DeviceBuffer.Upload(device, dtype, TestData.Uniform(keys, 44));
        using var output = DeviceBuffer.Allocate(device, dtype, queries);
        using var logSumExp = DeviceBuffer.Allocate(device, DType.F32, rows);
        AttentionKernels.Attention(device, dtype, q.Pointer, k.Pointer, v.Pointer, output.Pointer, logSumExp.Pointer, batch, queryTime, keyTime, heads, headDim);
        using var delta = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var dq = DeviceBuffer.Allocate(device, dtype, queries);
        using var dk = DeviceBuffer.Allocate(device, dtype, keys);
        using var dv = DeviceBuffer.Allocate(device, dtype, keys);

        byte[][] Run(byte garbage)
        {
            foreach (var buffer in new[] { dq, dk, dv }) device.Fill(buffer.Pointer, garbage, buffer.Bytes, default);
            using var recorder = ProfileRecorder.Start();
            AttentionKernels.AttentionBackward(device, dtype, dOutput.Pointer, q.Pointer, k.Pointer, v.Pointer, output.Pointer, logSumExp.Pointer,
                delta.Pointer, dq.Pointer, dk.Pointer, dv.Pointer, batch, queryTime, keyTime, heads, headDim);
            Assert.That(recorder.Events.Select(e => e.Name), Does.Contain(AttentionKernels.TensorCoreBackwardKernel(dtype, headDim)),
                "the tensor-core backward ran");
            return [.. new[] { dq, dk, dv }.Select(Bytes)];
        }

        byte[] Bytes(DeviceBuffer buffer)
        {
            var bytes = new byte[buffer.Bytes];
            device.CopyToHost(bytes, buffer.Pointer, default);
            device.Synchronize(default);
            return bytes;
        }

        var first = Run(0x00);
        var second = Run(0x7F);
        string[] names = ["dq", "dk", "dv"];
        for (int i = 0; i < names.Length; i++)
        {
            Assert.That(DeviceBuffer.Decode(dtype, first[i]), Has.All.Not.NaN, $"{names[i]}: every element written");
            Assert.That(second[i], Is.EqualTo(first[i]), $"{names[i]}: the second run's bytes");
        }
    }
}
