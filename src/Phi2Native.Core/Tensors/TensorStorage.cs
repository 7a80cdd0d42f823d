namespace Phi2Native.Tensors;

/// <summary>
/// A block of backend memory shared by a tensor and its reshaped views. Reference-counted: the memory
/// is released when the last tensor over it is disposed.
/// </summary>
public abstract class TensorStorage
{
    private int _references = 1;

    /// <summary>Size of the block in bytes.</summary>
    public abstract long ByteLength { get; }

    /// <summary>True once the memory has been released.</summary>
    public bool IsReleased => Volatile.Read(ref _references) <= 0;

    /// <summary>True when more than one tensor shares this memory (writing through one changes the others).</summary>
    public bool IsShared => Volatile.Read(ref _references) > 1;

    /// <summary>The storage that owns the memory: this one, or the one a <see cref="StorageView"/> is part of.</summary>
    internal virtual TensorStorage Root => this;

    /// <summary>Where this storage's bytes start in <see cref="Root"/>'s block (0 unless a view).</summary>
    internal virtual long RootOffset => 0;

    internal void AddReference()
    {
        if (Interlocked.Increment(ref _references) <= 1)
            throw new ObjectDisposedException(nameof(TensorStorage), "the tensor's memory was already released");
    }

    internal void RemoveReference()
    {
        if (Interlocked.Decrement(ref _references) == 0) Release();
    }

    /// <summary>Frees the backend memory; called once, when the last reference goes.</summary>
    protected abstract void Release();
}
