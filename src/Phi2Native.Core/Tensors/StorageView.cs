namespace Phi2Native.Tensors;

/// <summary>
/// A contiguous part of another storage's block, at a byte offset: how the q, k and v projections of a layer live in
/// one [3C, C] weight (and their gradients in one buffer) while each stays a tensor of its own. Holds one reference to
/// the root storage, so the block lives until the last view and the root's own tensors are gone; a view of a view
/// refers to the root directly. Backends resolve a tensor's address through <see cref="TensorStorage.Root"/> and
/// <see cref="TensorStorage.RootOffset"/>.
/// </summary>
/// <remarks>
/// <see cref="TensorStorage.IsShared"/> counts the tensors over this view only: views of disjoint parts of one block do
/// not share memory with each other, so a gradient that is such a view may be accumulated into in place.
/// </remarks>
internal sealed class StorageView : TensorStorage
{
    private readonly TensorStorage _root;
    private readonly long _offset, _byteLength;

    /// <summary>Bytes [<paramref name="byteOffset"/>, + <paramref name="byteLength"/>) of <paramref name="parent"/>, which gains a reference.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the parent's block.</exception>
    public StorageView(TensorStorage parent, long byteOffset, long byteLength)
    {
        if (byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > parent.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(byteOffset), byteOffset, $"a view of bytes [{byteOffset}, +{byteLength}) is outside the storage's {parent.ByteLength} bytes");
        _root = parent.Root;
        _offset = parent.RootOffset + byteOffset;
        _byteLength = byteLength;
        _root.AddReference();
    }

    /// <inheritdoc/>
    public override long ByteLength => _byteLength;

    internal override TensorStorage Root => _root;

    internal override long RootOffset => _offset;

    /// <inheritdoc/>
    protected override void Release() => _root.RemoveReference();
}
