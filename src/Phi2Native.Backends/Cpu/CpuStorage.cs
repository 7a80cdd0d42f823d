using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

/// <summary>A 64-byte aligned block from the backend's <see cref="CpuMemoryPool"/>; returned to it when the last tensor over it is disposed.</summary>
internal sealed unsafe class CpuStorage : TensorStorage
{
    private readonly CpuMemoryPool _pool;
    private readonly long _byteLength, _capacity;
    private nint _pointer;

    public CpuStorage(CpuMemoryPool pool, long byteLength)
    {
        _pool = pool;
        _byteLength = byteLength;
        _pointer = (nint)pool.Rent(byteLength, out _capacity);
    }

    public override long ByteLength => _byteLength;

    public void* Pointer
    {
        get
        {
            var pointer = _pointer;
            if (pointer == 0) throw new ObjectDisposedException(nameof(CpuStorage), "the tensor's memory was released");
            return (void*)pointer;
        }
    }

    protected override void Release()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    // A safety net for tensors that were never disposed: native memory must not leak with them.
    ~CpuStorage() => Free();

    private void Free()
    {
        var pointer = Interlocked.Exchange(ref _pointer, 0);
        if (pointer != 0) _pool.Return((void*)pointer, _capacity);
    }
}
