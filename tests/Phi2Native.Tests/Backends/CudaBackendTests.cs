using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// The CUDA backend's memory and plumbing on the emulated device: uploads and conversions against the CPU backend,
/// copies, element-wise ops, transposes, memory accounting and freeing, and the refusals (F64, CPU tensors, mismatched
/// shapes and dtypes).
/// </summary>
[TestFixture, Category("Emulated")]
public class CudaBackendTests : CudaBackendTestBase
{
    private static readonly float[] Special = [0f, 1f, -2.5f, 65504f, 0.0009765625f, float.NegativeInfinity, 1.00390625f, -3.1415927f, float.NaN];

    [Test]
    public void TheDeviceIsTheEmulatedOneAndSaysSo()
    {
        // The emulated device is named as --device names it, not as a GPU it is not.
        Assert.That(Cuda.Device, Is.EqualTo(new Device(DeviceKind.Emulated, 0)));
        Assert.That(Cuda.Device.ToString(), Is.EqualTo("emulated"));
        Assert.That(Cuda.Device.IsCudaBackend, Is.True);
        using var x = Cuda.Zeros([3], DType.F32);
        Assert.That(x.Device.ToString(), Is.EqualTo("emulated"));
        Assert.That(x.ToArray<float>(), Is.EqualTo(new float[3]));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void UploadsConvertEveryFloatSourceAsTheCpuBackendDoes(DType target)
    {
        foreach (var source in new[] { DType.F32, DType.BF16, DType.F16, DType.F64 })
        {
            using var cpuSource = On(Cpu, Special, DType.F32, Special.Length);
            using var cast = Cpu.Cast(cpuSource, source);
            var bytes = new byte[cast.ElementCount * source.SizeInBytes()];
            Cpu.CopyToHost(cast, bytes);
            using var expected = Cpu.FromBytes(bytes, source, [Special.Length], target);
            using var actual = Cuda.FromBytes(bytes, source, [Special.Length], target);
            Assert.That(actual.DType, Is.EqualTo(target));
            Assert.That(RawBytes(actual), Is.EqualTo(RawBytes(expected)), $"{source} -> {target}");
        }
    }

    [TestCase(DType.F32, DType.BF16)]
    [TestCase(DType.F32, DType.F16)]
    [TestCase(DType.BF16, DType.F32)]
    [TestCase(DType.F16, DType.F32)]
    [TestCase(DType.BF16, DType.F16)]
    public void CastsAreBitExactWithTheCpuBackend(DType from, DType to)
    {
        var values = Special.Concat(Random(37, 1, 300)).ToArray();
        using var cpu = Cpu.Cast(On(Cpu, values, DType.F32, values.Length), from);
        using var cuda = On(Cuda, values, from, values.Length);
        using var expected = Cpu.Cast(cpu, to);
        using var actual = Cuda.Cast(cuda, to);
        Assert.That(RawBytes(actual), Is.EqualTo(RawBytes(expected)));
    }

    [Test]
    public void CastToTheSameDTypeIsAnIndependentCopy()
    {
        using var x = On(Cuda, [1f, 2f, 3f], DType.F32, 3);
        using var copy = Cuda.Cast(x, DType.F32);
        Assert.That(copy.Storage, Is.Not.SameAs(x.Storage));
        Cuda.ScaleInPlace(x, 2);
        Assert.That(copy.ToArray<float>(), Is.EqualTo(new[] { 1f, 2f, 3f }));
        using var ids = Ids(Cuda, [4, 5], 2);
        using var idCopy = Cuda.Cast(ids, DType.I32);
        Assert.That(idCopy.ToArray<int>(), Is.EqualTo(new[] { 4, 5 }));
    }

    [Test]
    public void CopyMovesElementsBetweenShapesOfTheSameCount()
    {
        using var source = On(Cuda, [1f, 2f, 3f, 4f, 5f, 6f], DType.F32, 2, 3);
        using var destination = Cuda.Empty([3, 2], DType.F32);
        Cuda.Copy(source, destination);
        Assert.That(destination.ToArray<float>(), Is.EqualTo(new[] { 1f, 2f, 3f, 4f, 5f, 6f }));
        using var wrong = Cuda.Empty([5], DType.F32);
        Assert.That(() => Cuda.Copy(source, wrong), Throws.ArgumentException.With.Message.Contains("cannot copy"));
    }

    [Test]
    public void AddScaleAndAccumulateAreBitExactInF32()
    {
        var (ca, ga) = RandomPair(1, DType.F32, 3, 37);
        var (cb, gb) = RandomPair(2, DType.F32, 3, 37);
        using (ca) using (ga) using (cb) using (gb)
        {
            using var sum = Cpu.Add(ca, cb);
            using var deviceSum = Cuda.Add(ga, gb);
            Equal("a + b", sum, deviceSum);
            Cpu.AddInPlace(ca, cb);
            Cuda.AddInPlace(ga, gb);
            Equal("a += b", ca, ga);
            Cpu.ScaleInPlace(ca, 0.3);
            Cuda.ScaleInPlace(ga, 0.3);
            Equal("a *= 0.3", ca, ga);
        }
    }

    [Test]
    public void AddInBFloat16RoundsOnceLikeTheCpuBackendAfterACast()
    {
        var (ca, ga) = RandomPair(3, DType.BF16, 41);
        var (cb, gb) = RandomPair(4, DType.BF16, 41);
        using (ca) using (ga) using (cb) using (gb)
        {
            using var sum = Cpu.Add(ca, cb);
            using var expected = Cpu.Cast(sum, DType.BF16);
            using var actual = Cuda.Add(ga, gb);
            Assert.That(actual.DType, Is.EqualTo(DType.BF16));
            Assert.That(RawBytes(actual), Is.EqualTo(RawBytes(expected)));
        }
    }

    [TestCase(1, 1, DType.F32)]
    [TestCase(33, 70, DType.F32)]
    [TestCase(5, 3, DType.BF16)]
    public void TransposeMatchesTheCpuBackend(int rows, int columns, DType dtype)
    {
        var (cpu, cuda) = RandomPair(5, dtype, rows, columns);
        using (cpu) using (cuda)
        {
            using var expected = Cpu.Transpose(cpu);
            using var actual = Cuda.Transpose(cuda);
            Equal("transpose", expected, actual);
        }
    }

    [Test]
    public void EveryTensorOfAScopeIsFreedOnTheDevice()
    {
        int before = Device.Memory.LiveAllocations;
        using (TensorScope.Begin())
        {
            var x = On(Cuda, Random(12, 6), DType.F32, 3, 4);
            var w = On(Cuda, Random(20, 7), DType.F32, 5, 4);
            var b = On(Cuda, Random(5, 8), DType.F32, 5);
            var y = LinearOp.Forward(x, w, b);
            var view = y.Reshape(15);
            LinearOp.Backward(y, x, w, Cuda.Empty([3, 4], DType.F32), Cuda.Zeros([5, 4], DType.F32), Cuda.Zeros([5], DType.F32));
            _ = Cuda.Cast(view, DType.BF16);
            Assert.That(Device.Memory.LiveAllocations, Is.GreaterThan(before));
            Assert.That(Cuda.Memory.BytesInUse, Is.GreaterThan(0));
        }
        Assert.That(Cuda.Memory.BytesInUse, Is.Zero);
        // The ones vector of the bias gradient is the backend's own scratch, kept for reuse until it is disposed.
        Assert.That(Device.Memory.LiveAllocations, Is.EqualTo(before + 1));
    }

    [Test]
    public void AReshapedViewKeepsTheMemoryUntilTheLastReferenceGoes()
    {
        int before = Device.Memory.LiveAllocations;
        var x = On(Cuda, [1f, 2f, 3f, 4f], DType.F32, 4);
        var view = x.Reshape(2, 2);
        x.Dispose();
        Assert.That(Device.Memory.LiveAllocations, Is.EqualTo(before + 1));
        Assert.That(view.ToArray<float>(), Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
        view.Dispose();
        Assert.That(Device.Memory.LiveAllocations, Is.EqualTo(before));
    }

    [Test]
    public void MemoryStatisticsCountTensorsAndThePeakResets()
    {
        Assert.That(Cuda.Memory.BytesInUse, Is.Zero);
        var a = Cuda.Empty([100], DType.F32);
        var b = Cuda.Empty([50], DType.BF16);
        Assert.That(Cuda.Memory.BytesInUse, Is.EqualTo(500));
        a.Dispose();
        Assert.That(Cuda.Memory, Is.EqualTo(new MemoryStatistics(100, 500, 0)));
        Cuda.ResetPeakMemory();
        Assert.That(Cuda.Memory.PeakBytesInUse, Is.EqualTo(100));
        b.Dispose();
        Cuda.ReleaseCachedMemory();
        Assert.That(Cuda.Memory, Is.EqualTo(new MemoryStatistics(0, 100, 0)));
    }

    [Test]
    public void ZeroElementTensorsHoldNoAllocation()
    {
        int before = Device.Memory.LiveAllocations;
        using var empty = Cuda.Zeros([0, 4], DType.F32);
        Assert.That(Device.Memory.LiveAllocations, Is.EqualTo(before));
        Assert.That(empty.ToArray<float>(), Is.Empty);
        using var sum = Cuda.Add(empty, empty);
        Assert.That(sum.Shape.ToArray(), Is.EqualTo(new[] { 0, 4 }));
    }

    [Test]
    public void F64IsRefusedWithAClearMessage()
    {
        Assert.That(() => Cuda.Empty([2], DType.F64), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("no F64 tensors"));
        using var x = On(Cuda, [1f], DType.F32, 1);
        Assert.That(() => Cuda.Cast(x, DType.F64), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("F64"));
        // F64 source bytes are fine (the gradient tape seeds the loss gradient so): they are narrowed on the host.
        using var seed = Cuda.FromBytes(BitConverter.GetBytes(1.0), DType.F64, [1], DType.F32);
        Assert.That(seed.Item(), Is.EqualTo(1.0));
    }

    [Test]
    public void ACpuTensorInACudaOpIsRefusedByName()
    {
        using var cpu = On(Cpu, [1f, 2f], DType.F32, 2);
        using var cuda = On(Cuda, [1f, 2f], DType.F32, 2);
        var e = Assert.Throws<ArgumentException>(() => Cuda.Add(cuda, cpu));
        Assert.That(e!.ParamName, Is.EqualTo("b"));
        Assert.That(e.Message, Does.Contain("cpu memory").And.Contain("not on emulated"));
        Assert.That(() => Cuda.CopyToHost(cpu, new byte[8]), Throws.ArgumentException.With.Property("ParamName").EqualTo("tensor"));
        Assert.That(() => Cpu.Add(cpu, cuda), Throws.ArgumentException.With.Message.Contains("not in CPU memory"));
        using var other = new CudaBackend(new EmulatedDevice());
        using var foreign = On(other, [1f, 2f], DType.F32, 2);
        Assert.That(() => Cuda.AddInPlace(cuda, foreign), Throws.ArgumentException.With.Message.Contains("another CUDA backend"));
    }

    [Test]
    public void MismatchedShapesAndDTypesAreRefused()
    {
        using var a = On(Cuda, [1f, 2f, 3f], DType.F32, 3);
        using var b = On(Cuda, [1f, 2f], DType.F32, 2);
        using var c = On(Cuda, [1f, 2f, 3f], DType.BF16, 3);
        Assert.That(() => Cuda.Add(a, b), Throws.ArgumentException.With.Message.Contains("differ"));
        Assert.That(() => Cuda.Add(a, c), Throws.ArgumentException.With.Message.Contains("BF16"));
        Assert.That(() => Cuda.AddInPlace(a, b), Throws.ArgumentException.With.Message.Contains("cannot add"));
        Assert.That(() => Cuda.Transpose(a), Throws.ArgumentException.With.Message.Contains("expected a matrix"));
        using var ids = Ids(Cuda, [0, 1], 2);
        Assert.That(() => Cuda.Add(ids, ids), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("I32"));
        Assert.That(() => Cuda.Cast(ids, DType.F32), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("I32"));
        Assert.That(() => Cuda.FromBytes(new byte[7], DType.F32, [2], DType.F32), Throws.ArgumentException.With.Property("ParamName").EqualTo("data"));
    }

    [TestCase(5, DType.F32)]
    [TestCase(40001, DType.F32)]
    [TestCase(700, DType.BF16)]
    public void TheGradientCheckMatchesTheCpuBackend(int count, DType dtype)
    {
        var (cpu, cuda) = RandomPair(9, dtype, count);
        using (cpu) using (cuda)
        using (var cpuStatus = new StepStatus(Cpu))
        using (var cudaStatus = new StepStatus(Cuda))
        {
            GradientCheckOp.Measure([cpu], [], 0, cpuStatus);
            GradientCheckOp.Measure([cuda], [], 0, cudaStatus);
            Assert.That(cudaStatus.Read().SumOfSquares, Is.EqualTo(cpuStatus.Read().SumOfSquares).Within(1e-3).Percent, "fp32 partial sums: 1e-5 relative");
        }
        using var empty = Cuda.Zeros([0], DType.F32);
        using var status = new StepStatus(Cuda);
        GradientCheckOp.Measure([empty], [], 0, status);
        Assert.That(status.Read(), Is.EqualTo(new StepStatusReport(0, 0, -1, 0, 1, false)));
    }

    [Test]
    public void ABackendOwningItsDeviceFreesEverythingOnDispose()
    {
        var owner = new CudaBackend(new EmulatedDevice(), ownsDevice: true);
        var survivor = On(owner, [1f, 2f], DType.F32, 2);
        owner.Dispose();
        Assert.That(owner.IsDisposed);
        // The device freed its memory with itself: disposing the tensor afterwards must not free it again.
        Assert.DoesNotThrow(survivor.Dispose);
        Assert.That(() => owner.Zeros([1], DType.F32), Throws.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void ADisposedTensorIsRefused()
    {
        var x = On(Cuda, [1f], DType.F32, 1);
        x.Dispose();
        Assert.That(() => Cuda.ScaleInPlace(x, 2), Throws.InstanceOf<ObjectDisposedException>());
    }

    private static byte[] RawBytes(Tensor tensor)
    {
        var bytes = new byte[tensor.ElementCount * tensor.DType.SizeInBytes()];
        tensor.Backend.CopyToHost(tensor, bytes);
        return bytes;
    }
}
