using Phi2Native.Backends.Cpu;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// The CPU backend as the reference of the device checks: inputs go in as the very values a device buffer of the
/// check's dtype holds (rounded the way <see cref="DeviceBuffer.Upload(IDeviceApi, DType, ReadOnlySpan{float}, DeviceStream)"/>
/// rounds), the CPU computes in fp32 as it always does, and results come back as fp32 or cast to a 16-bit dtype by
/// the CPU backend's own <see cref="IBackend.Cast"/>.
/// </summary>
public sealed class CpuReference : IDisposable
{
    /// <summary>A fresh CPU backend that fills new tensors with NaN, so a reference that reads unwritten memory shows.</summary>
    public CpuBackend Backend { get; } = new(poisonNewMemory: true);

    /// <summary>
    /// An F32 CPU tensor of <paramref name="values"/> as stored in <paramref name="dtype"/>: the bytes a device buffer
    /// of that dtype would hold, widened by the CPU backend.
    /// </summary>
    public Tensor Stored(DType dtype, ReadOnlySpan<float> values, params int[] shape) =>
        Backend.FromBytes(DeviceBuffer.Encode(dtype, values), dtype, shape, DType.F32);

    /// <summary>An F32 CPU tensor of exactly <paramref name="values"/>.</summary>
    public Tensor F32(ReadOnlySpan<float> values, params int[] shape) => Stored(DType.F32, values, shape);

    /// <summary>
    /// <paramref name="tensor"/> cast to <paramref name="dtype"/> by the CPU backend and widened back: the fp32 view of
    /// what a device buffer of that dtype should hold.
    /// </summary>
    public float[] CastTo(DType dtype, Tensor tensor)
    {
        if (dtype == tensor.DType) return tensor.ToSingleArray();
        using var cast = Backend.Cast(tensor, dtype);
        return cast.ToSingleArray();
    }

    /// <summary>The values a buffer of <paramref name="dtype"/> holds after uploading <paramref name="values"/>.</summary>
    public static float[] RoundTrip(DType dtype, ReadOnlySpan<float> values) => DeviceBuffer.Decode(dtype, DeviceBuffer.Encode(dtype, values));

    /// <summary>Returns the backend's cached memory.</summary>
    public void Dispose() => Backend.Dispose();
}
