using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// The CUDA backend: tensors live in device memory of an <see cref="IDeviceApi"/> (a GPU through
/// <see cref="CudaDevice"/>, or the CPU kernel emulator through <see cref="Phi2Native.Cuda.Emulator.EmulatedDevice"/>), and every op runs as
/// kernels/*.cu launches (through the launchers of this folder) and <see cref="IBlas"/> products, queued in order on
/// one stream of the backend's own.
/// </summary>
/// <remarks>
/// <para>
/// Dtypes: F32, BF16 and F16 tensors and I32 ids can be stored; ops compute in F32 and, where the kernels have it,
/// BF16 (fp32 accumulation and statistics inside). F64 is refused: it exists for the CPU backend's gradient checks.
/// Saved statistics (LayerNorm mean and rstd, log-sum-exps) and the loss are F32 whatever the input dtype.
/// </para>
/// <para>
/// Host synchronization: only <see cref="CopyToHost"/> waits for the stream (a training step reads its status block
/// once, <see cref="Ops.Optimizer.StepStatus.Read"/>); every op of src/Phi2Native.Backends/Ops queues its work and reads what it needs (ids,
/// targets, counts, per-row positions and key times) on the device.
/// </para>
/// <para>Not thread-safe: one thread drives a backend at a time, as with the CPU backend's tensors.</para>
/// </remarks>
public sealed partial class CudaBackend : IBackend
{
    private readonly IDeviceApi _device;
    private readonly bool _ownsDevice;
    private readonly DeviceStream _stream;
    private long _bytesInUse, _peakBytesInUse;
    private bool _disposed;

    /// <summary>Creates a backend over <paramref name="device"/>, with a stream of its own.</summary>
    /// <param name="device">The device: <see cref="CudaDevice"/> or <see cref="Phi2Native.Cuda.Emulator.EmulatedDevice"/>.</param>
    /// <param name="ownsDevice">Dispose the device with the backend (true when the caller opened it only for this backend).</param>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    public CudaBackend(IDeviceApi device, bool ownsDevice = true)
    {
        ArgumentNullException.ThrowIfNull(device);
        _device = device;
        _ownsDevice = ownsDevice;
        _stream = device.CreateStream();
        Device = new Device(device.Kind, device.Ordinal);
    }

    /// <inheritdoc/>
    public Device Device { get; }

    /// <summary>The device the tensors live on.</summary>
    public IDeviceApi DeviceApi => _device;

    /// <summary>The stream every op of this backend is queued on.</summary>
    internal DeviceStream Stream => _stream;

    /// <summary>True once <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>True when disposing this backend disposed its device (its memory is gone with it).</summary>
    internal bool DeviceDisposed => _disposed && _ownsDevice;

    /// <inheritdoc/>
    /// <remarks>
    /// BytesInUse and its peak count this backend's tensors (bytes as requested, so a reset peak is this backend's own);
    /// BytesCached is what the device holds beyond the bytes its live allocations asked for: a caching allocator's free
    /// blocks plus its rounding of live ones (the device reports no finer split); 0 on the emulated device, which caches
    /// nothing. All of it comes from the device, so another backend on the same device shows in it too.
    /// </remarks>
    public MemoryStatistics Memory
    {
        get
        {
            var device = _device.Memory;
            return new MemoryStatistics(Interlocked.Read(ref _bytesInUse), Interlocked.Read(ref _peakBytesInUse),
                Math.Max(0, device.BytesReserved - device.BytesInUse));
        }
    }

    /// <inheritdoc/>
    /// <remarks>The device says what it caches (<see cref="IDeviceApi.ReleaseCachedMemory"/>): a GPU's caching allocator gives its free blocks back to the driver; the emulated device has nothing to release.</remarks>
    public void ReleaseCachedMemory()
    {
        ThrowIfDisposed();
        _device.ReleaseCachedMemory(_stream);
    }

    /// <inheritdoc/>
    public void ResetPeakMemory() => Interlocked.Exchange(ref _peakBytesInUse, Interlocked.Read(ref _bytesInUse));

    /// <inheritdoc/>
    /// <remarks>The contents are whatever the device left there: NaN on the emulated device, garbage on a GPU.</remarks>
    public Tensor Empty(ReadOnlySpan<int> shape, DType dtype) => Allocate(shape, dtype, nameof(dtype));

    /// <inheritdoc/>
    public Tensor Zeros(ReadOnlySpan<int> shape, DType dtype)
    {
        var tensor = Allocate(shape, dtype, nameof(dtype));
        if (tensor.Storage.ByteLength > 0) _device.Fill(Pointer(tensor, "tensor"), 0, ByteCount(tensor), _stream);
        return tensor;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Bytes of the requested dtype (and I32 ids) are uploaded as they are; F32, BF16 and F16 sources are uploaded and
    /// converted on the device by the cast kernels (one rounding to nearest even, as the CPU backend rounds); F64 sources
    /// (the gradient tape's seed, double-precision data) are narrowed to F32 on the host first.
    /// </remarks>
    /// <exception cref="ArgumentException">The byte count does not fill the shape, or the dtypes cannot be converted.</exception>
    public Tensor FromBytes(ReadOnlySpan<byte> data, DType sourceType, ReadOnlySpan<int> shape, DType dtype)
    {
        ThrowIfDisposed();
        RequireStorableDType(dtype, nameof(dtype));
        long count = Tensor.CountElements(shape);
        if (data.Length != count * sourceType.SizeInBytes())
            throw new ArgumentException($"{data.Length} bytes of {sourceType} do not fill shape [{string.Join(", ", shape.ToArray())}]", nameof(data));
        if ((sourceType == DType.I32) != (dtype == DType.I32))
            throw new ArgumentException($"no conversion from {sourceType} to {dtype}: ids stay I32 and floats stay floating-point", nameof(sourceType));
        if (sourceType == DType.F64)
        {
            var singles = new float[count];
            DTypes.WidenToSingle(data, DType.F64, singles);
            return FromBytes(MemoryMarshal.AsBytes(singles.AsSpan()), DType.F32, shape, dtype);
        }
        var tensor = Allocate(shape, dtype, nameof(dtype));
        if (count == 0) return tensor;
        try
        {
            if (sourceType == dtype)
            {
                _device.CopyToDevice(Pointer(tensor, "tensor"), data, _stream);
                return tensor;
            }
            // Upload the source as it is, then one cast launch: the device converts, the bus carries the narrower type.
            using var staged = Scratch(data.Length);
            _device.CopyToDevice(staged.Pointer, data, _stream);
            CastKernels.Cast(_device, sourceType, dtype, staged.Pointer, Pointer(tensor, "tensor"), count, _stream);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The tensor is not this backend's, or <paramref name="destination"/> is shorter than its bytes.</exception>
    // Never inlined (nor Synchronize): a profile names the backend method that waited (ProfileRecorder's call site), and
    // tiered compilation's guarded devirtualization inlined this one into its caller, so the frame vanished in long runs.
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void CopyToHost(Tensor tensor, Span<byte> destination)
    {
        var pointer = Pointer(tensor, nameof(tensor));
        long bytes = ByteCount(tensor);
        if (destination.Length < bytes)
            throw new ArgumentException($"{destination.Length} bytes cannot hold {tensor} ({bytes} bytes)", nameof(destination));
        if (bytes == 0) return;
        _device.CopyToHost(destination[..(int)bytes], pointer, _stream);
        _device.Synchronize(_stream);
    }

    /// <inheritdoc/>
    /// <remarks>A cast to the tensor's own dtype is a copy (the autograd code uses it so); I32 only copies.</remarks>
    public Tensor Cast(Tensor tensor, DType dtype)
    {
        var source = Pointer(tensor, nameof(tensor));
        RequireStorableDType(dtype, nameof(dtype));
        if (tensor.DType != dtype && (tensor.DType == DType.I32 || dtype == DType.I32))
            throw new NotSupportedException($"no conversion from {tensor.DType} to {dtype}: I32 ids are not cast to floating point or back");
        var result = Allocate(tensor.Shape, dtype, nameof(dtype));
        if (tensor.ElementCount == 0) return result;
        if (tensor.DType == dtype) _device.CopyOnDevice(Pointer(result, "result"), source, ByteCount(tensor), _stream);
        else CastKernels.Cast(_device, tensor.DType, dtype, source, Pointer(result, "result"), tensor.ElementCount, _stream);
        return result;
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">Element counts or dtypes differ, or the two ranges partly overlap.</exception>
    public void Copy(Tensor source, Tensor destination)
    {
        var from = Pointer(source, nameof(source));
        var to = Pointer(destination, nameof(destination));
        if (source.ElementCount != destination.ElementCount || source.DType != destination.DType)
            throw new ArgumentException($"cannot copy [{source.ShapeText}] {source.DType} into [{destination.ShapeText}] {destination.DType}");
        long bytes = ByteCount(source);
        if (bytes == 0 || from == to) return;   // a view onto the same memory: nothing to move
        BufferOverlap.RequireNone(from, bytes, to, bytes, nameof(source), nameof(destination));
        _device.CopyOnDevice(to, from, bytes, _stream);
    }

    /// <summary>Waits until every op queued so far has finished (and reports a failed launch).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void Synchronize()
    {
        ThrowIfDisposed();
        _device.Synchronize(_stream);
    }

    /// <summary>
    /// Waits for the queued work, frees the backend's scratch buffers and its stream, and disposes the device when the
    /// backend owns it. Tensors still alive afterwards must not be used; disposing them is harmless.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        try
        {
            _device.Synchronize(_stream);
            FreeScratch();
            _device.DestroyStream(_stream);
        }
        finally
        {
            _disposed = true;
            if (_ownsDevice) _device.Dispose();
        }
    }

    internal void TrackAllocation(long bytes)
    {
        long inUse = Interlocked.Add(ref _bytesInUse, bytes);
        long peak;
        while (inUse > (peak = Interlocked.Read(ref _peakBytesInUse)) && Interlocked.CompareExchange(ref _peakBytesInUse, inUse, peak) != peak) { }
    }

    internal void TrackRelease(long bytes) => Interlocked.Add(ref _bytesInUse, -bytes);

    internal Tensor Allocate(ReadOnlySpan<int> shape, DType dtype, string argument)
    {
        ThrowIfDisposed();
        RequireStorableDType(dtype, argument);
        long bytes = Tensor.CountElements(shape) * dtype.SizeInBytes();
        var storage = new CudaStorage(this, bytes);
        try
        {
            return new Tensor(this, storage, shape.ToArray(), dtype);
        }
        catch
        {
            storage.RemoveReference();
            throw;
        }
    }

    private static long ByteCount(Tensor tensor) => tensor.ElementCount * tensor.DType.SizeInBytes();

    private static void RequireStorableDType(DType dtype, string argument)
    {
        if (dtype == DType.F64)
            throw new NotSupportedException($"{argument}: the CUDA backend has no F64 tensors (F32, BF16, F16 or I32); F64 is the CPU backend's, for gradient checks");
        _ = dtype.SizeInBytes();   // an undefined enum value throws here, naming the dtype
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
