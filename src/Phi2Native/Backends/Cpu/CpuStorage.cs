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
        NativeMemory.AlignedFree(_pointer);
        _pointer = null;
    }
}
