using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// A CUDA backend on a fresh emulated device per test, beside a poisoning CPU backend as the reference, and helpers that
/// put the same values on both. Every test ends by checking that the device holds no allocation the test made.
/// </summary>
public abstract class CudaBackendTestBase
{
    protected EmulatedDevice Device = null!;
    protected CudaBackend Cuda = null!;
    protected CpuBackend Cpu = null!;
    private int _baseline;

    [SetUp]
    public void OpenBackends()
    {
        Device = new EmulatedDevice();
        Cuda = new CudaBackend(Device, ownsDevice: false);
        Cpu = new CpuBackend(poisonNewMemory: true);
        _baseline = Device.Memory.LiveAllocations;
    }

    [TearDown]
    public void CloseBackends()
    {
        try
        {
            // Disposing a backend that does not own its device frees its own scratch; what stays is a tensor the test kept.
            Cuda.Dispose();
            if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Passed)
                Assert.That(Device.Memory.LiveAllocations, Is.EqualTo(_baseline), "device allocations left behind by the test (tensors not freed)");
        }
        finally
        {
            Device.Dispose();
            Cpu.Dispose();
        }
    }

    /// <summary>Reproducible values in [-scale, scale).</summary>
    protected static float[] Random(int count, int seed, double scale = 1)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2 - 1) * scale))];
    }

    protected static Tensor On(IBackend backend, float[] values, DType dtype, params int[] shape) =>
        backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype);

    protected static Tensor Ids(IBackend backend, int[] ids, params int[] shape) =>
        backend.FromBytes(MemoryMarshal.AsBytes(ids.AsSpan()), DType.I32, shape, DType.I32);

    /// <summary>The same F32 values on the CPU (F32) and on the CUDA backend (as <paramref name="dtype"/>).</summary>
    protected (Tensor Cpu, Tensor Cuda) Pair(float[] values, DType dtype, params int[] shape) =>
        (On(Cpu, values, DType.F32, shape), On(Cuda, values, dtype, shape));

    /// <summary>Random values, rounded to <paramref name="dtype"/> first so both backends see the very same numbers.</summary>
    protected (Tensor Cpu, Tensor Cuda) RandomPair(int seed, DType dtype, params int[] shape)
    {
        var values = Random((int)Tensor.CountElements(shape), seed);
        if (dtype != DType.F32) values = DeviceBuffer.Decode(dtype, DeviceBuffer.Encode(dtype, values));
        return Pair(values, dtype, shape);
    }

    /// <summary>Asserts the CUDA tensor's values (widened to F32) are close to the CPU tensor's.</summary>
    protected static void Close(string name, Tensor expected, Tensor actual, Tolerance tolerance)
    {
        Assert.That(actual.Device.IsCudaBackend, Is.True, $"{name} is not on the CUDA backend");
        Assert.That(actual.Shape.ToArray(), Is.EqualTo(expected.Shape.ToArray()), $"{name}: shape");
        TensorAssert.Close(name, expected.ToSingleArray(), actual.ToSingleArray(), tolerance);
    }

    /// <summary>Asserts bit-for-bit equal F32 values.</summary>
    protected static void Equal(string name, Tensor expected, Tensor actual)
    {
        Assert.That(actual.Shape.ToArray(), Is.EqualTo(expected.Shape.ToArray()), $"{name}: shape");
        Assert.That(actual.ToSingleArray(), Is.EqualTo(expected.ToSingleArray()), name);
    }

    /// <summary>F32 against F32: a few ulp of summation order (fp32 products on the CPU, wider sums in the emulator's BLAS).</summary>
    protected static Tolerance F32 => new(1e-6, 1e-5);
}
