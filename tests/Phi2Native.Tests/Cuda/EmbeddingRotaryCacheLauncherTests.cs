using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Cuda;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The launchers of embedding.cu, rotary.cu, cache.cu and transpose.cu refuse bad arguments in C#, naming the
/// argument, before anything reaches a kernel; and pick the names and shapes their kernel files document.
/// </summary>
[TestFixture, Category("Emulated")]
public class EmbeddingRotaryCacheLauncherTests : LauncherTest
{
    protected override int Elements => 256;

    [Test]
    public void EmbeddingKernelNamesNameTheTableThenTheOutput()
    {
        Assert.That(EmbeddingKernels.ForwardName(DType.F32, DType.F32), Is.EqualTo("embedding_f32"));
        Assert.That(EmbeddingKernels.ForwardName(DType.BF16, DType.BF16), Is.EqualTo("embedding_bf16"));
        Assert.That(EmbeddingKernels.ForwardName(DType.BF16, DType.F32), Is.EqualTo("embedding_bf16_f32"));
        Assert.That(EmbeddingKernels.ForwardName(DType.F32, DType.BF16), Is.EqualTo("embedding_f32_bf16"));
        Assert.That(() => EmbeddingKernels.ForwardName(DType.F16, DType.F32), Throws.ArgumentException.With.Property("ParamName").EqualTo("tableDtype"));
        Assert.That(() => EmbeddingKernels.ForwardName(DType.F32, DType.I32), Throws.ArgumentException.With.Property("ParamName").EqualTo("outputDtype"));
    }

    [Test]
    public void HostIdsAreCheckedAsTheCpuBackendChecksThem()
    {
        EmbeddingKernels.CheckIds([0, 4, 9], 10);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingKernels.CheckIds([0, 4, 10, -1], 10));
        Assert.That(e!.ParamName, Is.EqualTo("ids"));
        Assert.That(e.Message, Does.Contain("ids[2] = 10 is outside the vocabulary [0, 10)"));
        Assert.That(() => EmbeddingKernels.CheckIds([int.MinValue], 10), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void TheBadPositionFlagReadsNoneAfterAReset()
    {
        using var flag = DeviceBuffer.Allocate(Emulated, DType.I32, 1);
        EmbeddingKernels.ResetBadPosition(Emulated, flag.Pointer);
        Assert.That(EmbeddingKernels.ReadBadPosition(Emulated, flag.Pointer), Is.Null);
        Assert.That(flag.DownloadInt32()[0], Is.EqualTo(EmbeddingKernels.NoBadPosition));
    }

    [Test]
    public void EmbeddingArgumentsAreCheckedByName()
    {
        var p = F32Buffer.Pointer;
        Assert.That(() => EmbeddingKernels.Embedding(Emulated, DType.F32, DType.F32, p, DevicePtr.Null, p.Offset(512), 4, 8, 4),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("ids"));
        Assert.That(() => EmbeddingKernels.Embedding(Emulated, DType.F32, DType.F32, p, I32Buffer.Pointer.Offset(2), p.Offset(512), 4, 8, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("ids"));
        Assert.That(() => EmbeddingKernels.Embedding(Emulated, DType.BF16, DType.F32, Bf16Buffer.Pointer, I32Buffer.Pointer, p.Offset(2), 4, 8, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("output"));
        Assert.That(() => EmbeddingKernels.Embedding(Emulated, DType.F32, DType.F32, p, I32Buffer.Pointer, p.Offset(512), 4, 8, 4, badPosition: p.Offset(1)),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("badPosition"));
        Assert.That(() => EmbeddingKernels.Embedding(Emulated, DType.F32, DType.F32, p, I32Buffer.Pointer, p.Offset(512), -1, 8, 4),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("count"));
        Assert.That(() => EmbeddingKernels.Embedding(Emulated, DType.F32, DType.F32, p, I32Buffer.Pointer, p.Offset(512), 4, 0, 4),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("vocabSize"));
        Assert.That(() => EmbeddingKernels.EmbeddingBackward(Emulated, DType.BF16, Bf16Buffer.Pointer, I32Buffer.Pointer, Bf16Buffer.Pointer.Offset(2), 4, 8, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dWeight"));
        Assert.That(() => EmbeddingKernels.EmbeddingBackward(Emulated, DType.F16, p, I32Buffer.Pointer, p, 4, 8, 4),
            Throws.ArgumentException.With.Message.Contains("embedding_backward has no F16 kernel"));
        Assert.That(() => EmbeddingKernels.EmbeddingBackward(Emulated, DType.F32, p, I32Buffer.Pointer, p, 4, 8, 0),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("channels"));
        Assert.That(() => EmbeddingKernels.EmbeddingBackward(Emulated, DType.F32, p, I32Buffer.Pointer, p, 4, 8, 4, maxBlocks: 0),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("maxBlocks"));
    }

    [Test]
    public void RotaryArgumentsAreCheckedByName()
    {
        var p = F32Buffer.Pointer;
        void Rotary(DevicePtr y, int headDim = 8, int rotaryDim = 4, double theta = 10000, int time = 2) =>
            RotaryKernels.Rotary(Emulated, DType.F32, p, y, DevicePtr.Null, 1, time, 2, headDim, rotaryDim, theta);
        Assert.That(() => Rotary(p.Offset(64), rotaryDim: 3), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rotaryDim"));
        Assert.That(() => Rotary(p.Offset(64), rotaryDim: 10), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rotaryDim"));
        Assert.That(() => Rotary(p.Offset(64), rotaryDim: -2), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rotaryDim"));
        Assert.That(() => RotaryKernels.Rotary(Emulated, DType.F32, p, p, DevicePtr.Null, 1, 1, 1, 300, 258, 10000),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rotaryDim").And.Message.Contains("256"));
        Assert.That(() => Rotary(p.Offset(64), theta: 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("theta"));
        Assert.That(() => Rotary(p.Offset(64), theta: double.NaN), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("theta"));
        Assert.That(() => RotaryKernels.Rotary(Emulated, DType.F32, p, p, DevicePtr.Null, 1, 2, 2, 8, 4, 10000, maxBlocks: -1),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("maxBlocks"));
        // In place is allowed; a partial overlap would race.
        Rotary(p);
        Assert.That(() => Rotary(p.Offset(16)), Throws.ArgumentException.With.Property("ParamName").EqualTo("y").And.Message.Contains("partly overlaps"));
        Assert.That(() => RotaryKernels.RotaryBackward(Emulated, DType.F32, p, p.Offset(4), DevicePtr.Null, 1, 2, 2, 8, 4, 10000),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dX"));
        Assert.That(() => RotaryKernels.RotaryBackward(Emulated, DType.BF16, DevicePtr.Null, p, DevicePtr.Null, 1, 2, 2, 8, 4, 10000),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("dY"));
        Assert.That(() => RotaryKernels.Rotary(Emulated, DType.F16, p, p, DevicePtr.Null, 1, 2, 2, 8, 4, 10000),
            Throws.ArgumentException.With.Message.Contains("rotary has no F16 kernel"));

        // With per-row offsets: x [2, 2, 2, 4] at p (128 bytes), y at p + 128 (128 bytes), offsets I32 [2] at p + 256.
        RotaryKernels.Rotary(Emulated, DType.F32, p, p.Offset(128), p.Offset(256), 2, 2, 2, 4, 4, 10000);
        RotaryKernels.Rotary(Emulated, DType.F32, p, p, p.Offset(256), 2, 2, 2, 4, 4, 10000);
        Assert.That(() => RotaryKernels.Rotary(Emulated, DType.F32, p, p.Offset(128), p.Offset(252), 2, 2, 2, 4, 4, 10000),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("y").And.Message.Contains("rowOffsets"));
        Assert.That(() => RotaryKernels.Rotary(Emulated, DType.F32, p, p.Offset(128), p.Offset(258), 2, 2, 2, 4, 4, 10000),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("rowOffsets"));
    }

    [Test]
    public void CacheWriteArgumentsAreCheckedByName()
    {
        var p = F32Buffer.Pointer;
        // source [2, 2, 2, 4] at p (128 bytes), cache [2, 5, 2, 4] at p + 128 (320 bytes), row positions I32 [2] at p + 448.
        CacheKernels.CacheWrite(Emulated, DType.F32, p, p.Offset(128), p.Offset(448), 2, 2, 2, 4, 5);
        Assert.That(() => CacheKernels.CacheWrite(Emulated, DType.F32, p, p.Offset(128), DevicePtr.Null, 2, 2, 2, 4, 5),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("rowPositions"));
        Assert.That(() => CacheKernels.CacheWrite(Emulated, DType.F32, p, p.Offset(128), p.Offset(440), 2, 2, 2, 4, 5),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("cache").And.Message.Contains("rowPositions"));
        Assert.That(() => CacheKernels.CacheWrite(Emulated, DType.F32, p, p.Offset(64), p.Offset(448), 2, 2, 2, 4, 5),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("cache").And.Message.Contains("source"));
        Assert.That(() => CacheKernels.CacheWrite(Emulated, DType.BF16, Bf16Buffer.Pointer, Bf16Buffer.Pointer.Offset(129), Bf16Buffer.Pointer.Offset(448), 2, 2, 2, 4, 5),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("cache"));
        Assert.That(() => CacheKernels.CacheWrite(Emulated, DType.F32, p, p.Offset(128), p.Offset(448), 2, 6, 2, 4, 5),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("capacity"));
        Assert.That(() => CacheKernels.CacheWrite(Emulated, DType.F32, p, p.Offset(128), p.Offset(448), 2, 2, 2, 0, 5),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("headDim"));
    }

    [Test]
    public void TransposeArgumentsAreCheckedByName()
    {
        var p = F32Buffer.Pointer;
        Assert.That(() => TransposeKernels.Transpose(Emulated, DType.F32, p, p.Offset(16), 4, 4),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("y").And.Message.Contains("overlaps"));
        Assert.That(() => TransposeKernels.Transpose(Emulated, DType.F32, p, p, 4, 4), Throws.ArgumentException.With.Property("ParamName").EqualTo("y"));
        Assert.That(() => TransposeKernels.Transpose(Emulated, DType.F32, p, p.Offset(64), -1, 4),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rows"));
        Assert.That(() => TransposeKernels.Transpose(Emulated, DType.F32, p, p.Offset(64), 65536 * 32, 1),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rows"));
        Assert.That(() => TransposeKernels.Transpose(Emulated, DType.F16, p, p.Offset(64), 4, 4),
            Throws.ArgumentException.With.Message.Contains("transpose has no F16 kernel"));
    }

    [Test]
    public void EmptyWorkLaunchesNothing()
    {
        var device = new RecordingDevice();
        DevicePtr p = new(0x10000);
        EmbeddingKernels.Embedding(device, DType.F32, DType.F32, p, p, p.Offset(4096), 0, 8, 4);
        EmbeddingKernels.EmbeddingBackward(device, DType.F32, p, p, p.Offset(4096), 0, 8, 4);
        RotaryKernels.Rotary(device, DType.F32, p, p, DevicePtr.Null, 0, 3, 2, 8, 4, 10000);
        RotaryKernels.RotaryBackward(device, DType.BF16, p, p, DevicePtr.Null, 2, 0, 2, 8, 4, 10000);
        RotaryKernels.Rotary(device, DType.F32, p, p, p.Offset(8192), 0, 3, 2, 8, 4, 10000);
        CacheKernels.CacheWrite(device, DType.BF16, p, p.Offset(4096), p.Offset(8192), 2, 0, 2, 4, 5);
        TransposeKernels.Transpose(device, DType.F32, p, p.Offset(4096), 0, 7);
        TransposeKernels.Transpose(device, DType.BF16, p, p.Offset(4096), 7, 0);
        Assert.That(device.Launches, Is.Empty);
    }

    [Test]
    public void LaunchShapesAreTheDocumentedOnes()
    {
        var device = new RecordingDevice();
        DevicePtr p = new(0x10000), q = new(0x1000000);
        EmbeddingKernels.Embedding(device, DType.BF16, DType.F32, p, p, q, 4096, 51200, 2560);
        EmbeddingKernels.EmbeddingBackward(device, DType.BF16, p, p, q, 4096, 51200, 2560);
        RotaryKernels.Rotary(device, DType.BF16, p, p, DevicePtr.Null, 2, 2048, 32, 80, 32, 10000);
        CacheKernels.CacheWrite(device, DType.BF16, p, q, new DevicePtr(0x40000000), 1, 1, 32, 80, 2048);
        TransposeKernels.Transpose(device, DType.F32, p, q, 70, 33);
        EmbeddingKernels.EmbeddingBackward(device, DType.F32, p, p, q, 4096, 51200, 7, maxBlocks: 512);
        RotaryKernels.RotaryBackward(device, DType.F32, p, p, new DevicePtr(0x4000000), 1, 5, 2, 10, 6, 10000, maxBlocks: 2);
        RotaryKernels.Rotary(device, DType.BF16, p, p, new DevicePtr(0x4000000), 4, 1, 32, 80, 32, 10000);
        CacheKernels.CacheWrite(device, DType.F32, p, q, new DevicePtr(0x40000000), 4, 1, 32, 80, 2048);
        Assert.That(device.Shapes, Is.EqualTo(new[]
        {
            ("embedding_bf16_f32", new Dim3(4096), new Dim3(256)),
            ("embedding_backward_bf16", new Dim3(4096), new Dim3(256)),
            // H * (D - rd / 2) = 32 * 64 work items per token row: 256 threads.
            ("rotary_bf16", new Dim3(4096), new Dim3(256)),
            ("cache_write_bf16", new Dim3(10), new Dim3(256)),
            ("transpose_f32", new Dim3(2, 3), new Dim3(32, 8)),
            ("embedding_backward_f32", new Dim3(512), new Dim3(32)),
            ("rotary_backward_f32", new Dim3(2), new Dim3(32)),
            ("rotary_bf16", new Dim3(4), new Dim3(256)),
            ("cache_write_f32", new Dim3(40), new Dim3(256)),
        }));
        Assert.That(device.Launches.Select(l => l.SharedBytes), Is.All.Zero, "these kernels take no dynamic shared memory");
    }
}
