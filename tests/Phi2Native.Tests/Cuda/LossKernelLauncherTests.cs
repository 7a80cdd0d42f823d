using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Cuda;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The launchers of the loss and the optimizer (<see cref="CrossEntropyKernels"/>, <see cref="OptimizerKernels"/>, <see cref="AdamWOp"/>) refuse
/// bad arguments in C#, naming the argument, before anything reaches a kernel; they launch nothing where nothing is to
/// be done, and form AdamW's scalars as the CPU backend does.
/// </summary>
[TestFixture, Category("Emulated")]
public class LossKernelLauncherTests : LauncherTest
{
    private static readonly AdamWStepArguments Step1 = new(2e-4, 0.9, 0.999, 1e-8, 0.01, 1);

    [Test]
    public void CrossEntropyRefusesAnUnsupportedDTypeByName()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            CrossEntropyKernels.CrossEntropy(Emulated, DType.F16, Bf16Buffer.Pointer, I32Buffer.Pointer, F(0), DevicePtr.Null, 2, 8));
        Assert.That(e!.Message, Does.Contain("cross_entropy has no F16 kernel"));
        Assert.That(() => CrossEntropyKernels.CrossEntropyBackward(Emulated, DType.F16, Bf16Buffer.Pointer, I32Buffer.Pointer, F(0), I32Buffer.Pointer, DevicePtr.Null, Bf16Buffer.Pointer, 2, 8),
            Throws.ArgumentException.With.Message.Contains("cross_entropy_backward has no F16 kernel"));
        Assert.That(() => CrossEntropyKernels.CrossEntropySum(Emulated, DType.F16, Bf16Buffer.Pointer, I32Buffer.Pointer, F(0), F(1), DevicePtr.Null, I32Buffer.Pointer, 2, 8),
            Throws.ArgumentException.With.Message.Contains("cross_entropy_sum has no F16 kernel"));
    }

    [Test]
    public void CrossEntropyRefusesNullAndMisalignedPointersByName()
    {
        Assert.That(() => CrossEntropyKernels.CrossEntropy(Emulated, DType.F32, F(0), DevicePtr.Null, F(16), DevicePtr.Null, 2, 8),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("targets"));
        Assert.That(() => CrossEntropyKernels.CrossEntropy(Emulated, DType.F32, F(0), I32Buffer.Pointer, DevicePtr.Null, DevicePtr.Null, 2, 8),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("logSumExp"));
        // Targets are I32 (4 bytes) and the statistics fp32 beside bf16 logits (2-byte aligned).
        Assert.That(() => CrossEntropyKernels.CrossEntropy(Emulated, DType.BF16, Bf16Buffer.Pointer.Offset(2), I32Buffer.Pointer.Offset(2), F(16), DevicePtr.Null, 2, 8),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("targets"));
        Assert.That(() => CrossEntropyKernels.CrossEntropy(Emulated, DType.BF16, Bf16Buffer.Pointer, I32Buffer.Pointer, F(16), Bf16Buffer.Pointer.Offset(2), 2, 8),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("loss"));
        Assert.That(() => CrossEntropyKernels.CrossEntropySum(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), F(20), DevicePtr.Null, DevicePtr.Null, 2, 8),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("counted"));
        Assert.That(() => CrossEntropyKernels.CrossEntropySum(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), DevicePtr.Null, F(20), I32Buffer.Pointer, 2, 8),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("lossSum"));
        Assert.That(() => CrossEntropyKernels.CrossEntropyBackward(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), I32Buffer.Pointer, DevicePtr.Null, F32Buffer.Pointer.Offset(1), 2, 8),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dLogits"));
    }

    [Test]
    public void CrossEntropyChecksSizesAndTheCountPointer()
    {
        Assert.That(() => CrossEntropyKernels.CrossEntropy(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), DevicePtr.Null, -1, 8),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rows"));
        Assert.That(() => CrossEntropyKernels.CrossEntropy(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), DevicePtr.Null, 2, 0),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("vocabSize"));
        Assert.That(() => CrossEntropyKernels.CrossEntropyBackward(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), DevicePtr.Null, DevicePtr.Null, F(32), 2, 8),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("counted"));
        Assert.That(() => CrossEntropyKernels.CrossEntropyBackward(Emulated, DType.F32, F(0), I32Buffer.Pointer, F(16), I32Buffer.Pointer, F(1).Offset(2), F(32), 2, 8),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("dLoss"));
    }

    [Test]
    public void CrossEntropyOverNoRowsLaunchesNothingButTheTotal()
    {
        var device = new RecordingDevice();
        DevicePtr p = new(0x10000);
        CrossEntropyKernels.CrossEntropy(device, DType.F32, p, p, p, DevicePtr.Null, 0, 8);
        CrossEntropyKernels.CrossEntropyBackward(device, DType.BF16, p, p, p, p, p, p, 0, 8);
        Assert.That(device.Launches, Is.Empty);
        // The total must still write its zeros, so that an empty batch reads back loss 0 and counted 0.
        CrossEntropyKernels.CrossEntropySum(device, DType.F32, p, p, p, p, DevicePtr.Null, p, 0, 8);
        Assert.That(device.Shapes, Is.EqualTo(new[] { ("cross_entropy_sum_f32", new Dim3(1), new Dim3(CrossEntropyKernels.SumBlock)) }));
    }

    [Test]
    public void CrossEntropyLaunchesOneBlockPerRow()
    {
        var device = new RecordingDevice();
        DevicePtr p = new(0x10000);
        CrossEntropyKernels.CrossEntropy(device, DType.BF16, p, p, p, DevicePtr.Null, 6, 1003);
        CrossEntropyKernels.CrossEntropyBackward(device, DType.F32, p, p, p, p, p, p, 5, 7);
        Assert.That(device.Shapes, Is.EqualTo(new[]
        {
            ("cross_entropy_bf16", new Dim3(6), new Dim3(256)),
            ("cross_entropy_backward_f32", new Dim3(5), new Dim3(32)),
        }));
    }

    [Test]
    public void ATargetOutsideTheVocabularyMakesItsRowNaNInsteadOfReadingOutOfBounds()
    {
        // The CPU backend throws for such a target; a kernel cannot, so the row's loss, its term of the total and its
        // gradient row are NaN, and the other rows are untouched by it. Row 1 is ignored, row 2 is fine.
        const int rows = 4, vocab = 5;
        float[] values = [.. Enumerable.Range(0, rows * vocab).Select(i => 0.1f * (i % 7))];
        using var logits = DeviceBuffer.Upload(Emulated, DType.F32, values);
        using var targets = DeviceBuffer.Upload(Emulated, [vocab, CrossEntropyKernels.DefaultIgnoreIndex, 2, -1]);
        using var lse = DeviceBuffer.Allocate(Emulated, DType.F32, rows);
        using var loss = DeviceBuffer.Allocate(Emulated, DType.F32, rows);
        using var sum = DeviceBuffer.Allocate(Emulated, DType.F32, 1);
        using var counted = DeviceBuffer.Allocate(Emulated, DType.I32, 1);
        using var dLogits = DeviceBuffer.Allocate(Emulated, DType.F32, rows * vocab);
        CrossEntropyKernels.CrossEntropy(Emulated, DType.F32, logits.Pointer, targets.Pointer, lse.Pointer, loss.Pointer, rows, vocab);
        CrossEntropyKernels.CrossEntropySum(Emulated, DType.F32, logits.Pointer, targets.Pointer, lse.Pointer, sum.Pointer, DevicePtr.Null,
            counted.Pointer, rows, vocab);
        CrossEntropyKernels.CrossEntropyBackward(Emulated, DType.F32, logits.Pointer, targets.Pointer, lse.Pointer, counted.Pointer, DevicePtr.Null, dLogits.Pointer, rows, vocab);

        float[] l = loss.Download(), d = dLogits.Download();
        Assert.That(lse.Download(), Has.All.Matches<float>(float.IsFinite));
        Assert.That(float.IsNaN(l[0]) && l[1] == 0 && float.IsFinite(l[2]) && float.IsNaN(l[3]), $"loss: {string.Join(", ", l)}");
        Assert.That(float.IsNaN(sum.Download()[0]));
        Assert.That(counted.DownloadInt32()[0], Is.EqualTo(3));
        Assert.That(d[..vocab], Has.All.NaN);
        Assert.That(d[vocab..(2 * vocab)], Has.All.EqualTo(0f));
        Assert.That(d[(2 * vocab)..(3 * vocab)].Sum(), Is.EqualTo(0).Within(1e-6), "softmax - onehot sums to 0");
        Assert.That(d[(3 * vocab)..], Has.All.NaN);
    }

    [Test]
    public void OptimizerLaunchersRefuseBadArgumentsByName()
    {
        Assert.That(() => OptimizerKernels.ChunkSumOfSquares(Emulated, DType.F64, F(0), F(8), F(16), 1, default, 4, 1),
            Throws.ArgumentException.With.Message.Contains("chunk_sum_of_squares has no F64 kernel"));
        Assert.That(() => OptimizerKernels.ChunkSumOfSquares(Emulated, DType.F32, DevicePtr.Null, F(8), F(16), 1, default, 4, 1),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("tensorPointers"));
        Assert.That(() => OptimizerKernels.ChunkSumOfSquares(Emulated, DType.F32, F(0), F(8).Offset(4), F(16), 1, default, 4, 1),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("chunks"));
        Assert.That(() => OptimizerKernels.ChunkSumOfSquares(Emulated, DType.F32, F(0), F(8), F(16), 0, default, 4, 1),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("chunkCount"));
        Assert.That(() => OptimizerKernels.StepStatus(Emulated, F(0), F(8), 1, DevicePtr.Null, 0, double.NaN, F(16), DevicePtr.Null, F(24), default, 1),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("maxNorm"));
        Assert.That(() => OptimizerKernels.StepStatus(Emulated, F(0), F(8), 1, DevicePtr.Null, 1, 1, F(16), DevicePtr.Null, F(24), default, 1),
            Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo("losses"));
        Assert.That(() => OptimizerKernels.AdamWChunks(Emulated, F(0), F(8), 1, F(16).Offset(4), default, 64, 1),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("status"));
    }

    [Test]
    public void AdamWRefusesBadStepsByName()
    {
        var backend = new CpuBackend();
        using var scope = TensorScope.Begin();
        var (p, g, m, v) = (backend.Zeros([8], DType.F32), backend.Zeros([8], DType.F32), backend.Zeros([8], DType.F32), backend.Zeros([8], DType.F32));
        Assert.That(() => AdamWOp.Step([new AdamWTensors(p, g, m, v, Step1 with { Step = 0 })]),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("tensors[0].Arguments.Step"));
        Assert.That(() => AdamWOp.Step([new AdamWTensors(p, g, m, v, Step1 with { Beta2 = 1 })]),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("tensors[0].Arguments.Beta2"));
        Assert.That(() => AdamWOp.Step([new AdamWTensors(p, g, m, m, Step1)]),
            Throws.ArgumentException.With.Message.Contains("a second time"));
        Assert.That(() => AdamWOp.Step([new AdamWTensors(p, g, m, v, Step1), new AdamWTensors(p, backend.Zeros([8], DType.F32), backend.Zeros([8], DType.F32), backend.Zeros([8], DType.F32), Step1)]),
            Throws.ArgumentException.With.Message.Contains("tensors[1] uses"));
    }

    [Test]
    public void AdamWScalarsAreFormedInDoubleAndRoundedOnce()
    {
        var arguments = new AdamWStepArguments(3e-4, 0.9, 0.999, 1e-8, 0.1, 3);
        var s = OptimizerKernels.Scalars(arguments);
        Assert.That(s.Decay, Is.EqualTo((float)(1 - 3e-4 * 0.1)));
        Assert.That(s.OneMinusBeta1, Is.EqualTo((float)(1 - 0.9)));
        Assert.That(s.OneMinusBeta2, Is.EqualTo((float)(1 - 0.999)));
        Assert.That(s.NegativeStepSize, Is.EqualTo((float)(-3e-4 / (1 - Math.Pow(0.9, 3)))));
        Assert.That(s.Correction2Root, Is.EqualTo((float)Math.Sqrt(1 - Math.Pow(0.999, 3))));
        Assert.That(s.Epsilon, Is.EqualTo(1e-8f));
        // 1 - beta rounded from double differs from 1f - (float)beta: the CPU's is the former.
        Assert.That(s.OneMinusBeta2, Is.Not.EqualTo(1f - (float)0.999));
        Assert.That(OptimizerKernels.Scalars(arguments with { WeightDecay = 0 }).Decay, Is.EqualTo(1f));
    }

    [Test]
    public void TheTablesHaveTheLayoutsOfOptimizerCu()
    {
        Assert.That(Marshal.SizeOf<OptimizerKernels.TensorChunk>(), Is.EqualTo(16), "tensor_chunk");
        Assert.That(Marshal.SizeOf<OptimizerKernels.ChunkRange>(), Is.EqualTo(8), "chunk_range");
        Assert.That(Marshal.SizeOf<OptimizerKernels.AdamWTensor>(), Is.EqualTo(64), "adamw_tensor");
        Assert.That(StepStatus.Bytes, Is.EqualTo(40), "status_block");
    }

    [Test]
    public void AdamWLaunchesOneBlockPerChunk()
    {
        var recorder = new RecordingDevice();
        OptimizerKernels.AdamWChunks(recorder, new DevicePtr(0x10000), new DevicePtr(0x20000), 4, DevicePtr.Null, default, 64, 1);
        Assert.That(recorder.Shapes, Is.EqualTo(new[] { ("adamw_chunks_f32", new Dim3(4), new Dim3(256)) }));
    }
}
