using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// One device allocation of a <see cref="CudaBackend"/>, shared by a tensor and its reshaped views; freed on the
/// device when the last tensor over it is disposed.
/// </summary>
/// <remarks>
/// There is no finalizer: freeing device memory needs the device (and on a GPU its context on the calling thread),
/// which a finalizer thread cannot promise. A tensor that is never disposed keeps its memory until the device is
/// disposed, which frees every allocation. A zero-byte tensor holds no allocation (a null pointer).
/// </remarks>
internal sealed class CudaStorage : TensorStorage
{
    private readonly CudaBackend _backend;
    private readonly long _byteLength;
    private DevicePtr _pointer;

    /// <summary>Allocates <paramref name="byteLength"/> bytes on the backend's device (nothing for 0).</summary>
    public CudaStorage(CudaBackend backend, long byteLength)
    {
        _backend = backend;
        _byteLength = byteLength;
        _pointer = byteLength > 0 ? backend.DeviceApi.Allocate(byteLength) : DevicePtr.Null;
        backend.TrackAllocation(byteLength);
    }

    /// <summary>The backend that allocated the memory: ops refuse storage of another backend.</summary>
    public CudaBackend Backend => _backend;

    /// <inheritdoc/>
    public override long ByteLength => _byteLength;

    /// <summary>The allocation's start (null for a zero-byte tensor); throws once released.</summary>
    public DevicePtr Pointer => IsReleased
        ? throw new ObjectDisposedException(nameof(CudaStorage), "the tensor's device memory was released")
        : _pointer;

    /// <inheritdoc/>
    protected override void Release()
    {
        var pointer = _pointer;
        _pointer = DevicePtr.Null;
        _backend.TrackRelease(_byteLength);
        // A device the backend owned and disposed has freed everything already; freeing again would be a double free.
        if (!pointer.IsNull && !_backend.DeviceDisposed) _backend.DeviceApi.Free(pointer);
    }
}
