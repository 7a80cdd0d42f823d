using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

/// <summary>64-byte aligned native memory for CPU tensors; freed when the last tensor over it is disposed.</summary>
internal sealed unsafe class CpuStorage : TensorStorage
{
    private void* _pointer;
    private readonly long _byteLength;

    public CpuStorage(long byteLength)
    {
        _byteLength = byteLength;
        // Zero-byte tensors still get a valid, unique pointer.
        _pointer = NativeMemory.AlignedAlloc((nuint)Math.Max(byteLength, 1), 64);
    }

    public override long ByteLength => _byteLength;

    public void* Pointer
    {
        get
        {
            if (_pointer == null) throw new ObjectDisposedException(nameof(CpuStorage), "the tensor's memory was released");
            return _pointer;
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
        void* pointer;
        fixed (void** slot = &_pointer) pointer = (void*)Interlocked.Exchange(ref *(nint*)slot, 0);
        if (pointer != null) NativeMemory.AlignedFree(pointer);
    }
}
