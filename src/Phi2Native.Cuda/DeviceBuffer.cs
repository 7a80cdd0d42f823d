using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.Cuda;

/// <summary>
/// One device allocation of <see cref="Count"/> elements of <see cref="DType"/>, freed on dispose: what launch code
/// passes to kernels and what checks upload to and read back from. Host values travel as fp32 and are rounded to
/// nearest even on the way in for <see cref="DType.BF16"/> and <see cref="DType.F16"/>, as the CPU backend rounds.
/// </summary>
internal sealed class DeviceBuffer : IDisposable
{
    private DevicePtr _pointer;

    private DeviceBuffer(IDeviceApi device, DType dtype, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        if (dtype == DType.F64) throw new ArgumentException("the CUDA path has no F64 buffers (F32, BF16, F16 or I32)", nameof(dtype));
        Device = device;
        DType = dtype;
        Count = count;
        _pointer = device.Allocate(Bytes);
    }

    /// <summary>The device the memory lives on.</summary>
    public IDeviceApi Device { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; }

    /// <summary>Number of elements.</summary>
    public long Count { get; }

    /// <summary>Size in bytes.</summary>
    public long Bytes => Count * DType.SizeInBytes();

    /// <summary>The allocation's start; throws once disposed, so a freed buffer is never handed to a kernel.</summary>
    public DevicePtr Pointer => _pointer.IsNull ? throw new ObjectDisposedException(nameof(DeviceBuffer)) : _pointer;

    /// <summary>Allocates <paramref name="count"/> elements; the contents are undefined (NaN on the emulated device).</summary>
    public static DeviceBuffer Allocate(IDeviceApi device, DType dtype, long count) => new(device, dtype, count);

    /// <summary>Allocates and uploads <paramref name="values"/>, converted to <paramref name="dtype"/> (F32, BF16 or F16).</summary>
    public static DeviceBuffer Upload(IDeviceApi device, DType dtype, ReadOnlySpan<float> values, DeviceStream stream = default)
    {
        var buffer = new DeviceBuffer(device, dtype, values.Length);
        try
        {
            device.CopyToDevice(buffer.Pointer, Encode(dtype, values), stream);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Allocates and uploads 32-bit integers (token ids, targets) as <see cref="DType.I32"/>.</summary>
    public static DeviceBuffer Upload(IDeviceApi device, ReadOnlySpan<int> values, DeviceStream stream = default)
    {
        var buffer = new DeviceBuffer(device, DType.I32, values.Length);
        try
        {
            device.CopyToDevice(buffer.Pointer, MemoryMarshal.AsBytes(values), stream);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Reads the whole buffer back as fp32 (widening BF16/F16 exactly), after the stream's work has finished.</summary>
    public float[] Download(DeviceStream stream = default)
    {
        if (DType == DType.I32) throw new InvalidOperationException("an I32 buffer reads back with DownloadInt32");
        var bytes = new byte[Bytes];
        Device.CopyToHost(bytes, Pointer, stream);
        Device.Synchronize(stream);
        return Decode(DType, bytes);
    }

    /// <summary>Reads an <see cref="DType.I32"/> buffer back.</summary>
    public int[] DownloadInt32(DeviceStream stream = default)
    {
        if (DType != DType.I32) throw new InvalidOperationException($"DownloadInt32 needs an I32 buffer, this one is {DType}");
        var values = new int[Count];
        Device.CopyToHost(MemoryMarshal.AsBytes(values.AsSpan()), Pointer, stream);
        Device.Synchronize(stream);
        return values;
    }

    /// <summary>Frees the allocation (once).</summary>
    public void Dispose()
    {
        if (_pointer.IsNull) return;
        var p = _pointer;
        _pointer = DevicePtr.Null;
        Device.Free(p);
    }

    /// <summary>The bytes of <paramref name="values"/> stored as <paramref name="dtype"/>.</summary>
    public static byte[] Encode(DType dtype, ReadOnlySpan<float> values)
    {
        switch (dtype)
        {
            case DType.F32:
                return MemoryMarshal.AsBytes(values).ToArray();
            case DType.BF16:
            {
                var bits = new ushort[values.Length];
                for (int i = 0; i < bits.Length; i++) bits[i] = DTypes.SingleToBFloat16(values[i]);
                return MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
            }
            case DType.F16:
            {
                var halves = new Half[values.Length];
                for (int i = 0; i < halves.Length; i++) halves[i] = (Half)values[i];
                return MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
            }
            default:
                throw new ArgumentException($"cannot encode floats as {dtype}", nameof(dtype));
        }
    }

    /// <summary>The fp32 values of <paramref name="bytes"/> stored as <paramref name="dtype"/>.</summary>
    public static float[] Decode(DType dtype, ReadOnlySpan<byte> bytes) => dtype switch
    {
        DType.F32 => MemoryMarshal.Cast<byte, float>(bytes).ToArray(),
        DType.BF16 => [.. MemoryMarshal.Cast<byte, ushort>(bytes).ToArray().Select(DTypes.BFloat16ToSingle)],
        DType.F16 => [.. MemoryMarshal.Cast<byte, Half>(bytes).ToArray().Select(h => (float)h)],
        _ => throw new ArgumentException($"cannot decode {dtype} as floats", nameof(dtype)),
    };
}
