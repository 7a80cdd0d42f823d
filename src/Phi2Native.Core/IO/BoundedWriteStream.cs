namespace Phi2Native.IO;

/// <summary>
/// The write-only stream a streamed tensor's callback receives: it forwards to the output file and refuses to
/// go past the tensor's declared size.
/// </summary>
/// <remarks>
/// Without the bound, a callback that writes too much would silently shift every later tensor and corrupt the
/// file while its header still looked right. Disposing it does not close the file underneath.
/// </remarks>
internal sealed class BoundedWriteStream(Stream inner, string tensorName, long capacity) : Stream
{
    /// <summary>Bytes written so far.</summary>
    public long Written { get; private set; }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position
    {
        get => Written;
        set => throw new NotSupportedException();
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (buffer.Length > capacity - Written)
            throw new InvalidOperationException(
                $"tensor '{tensorName}': the streamed callback wrote more than the {capacity} bytes its shape needs");
        inner.Write(buffer);
        Written += buffer.Length;
    }

    public override void WriteByte(byte value) => Write([value]);

    // The file is flushed once, to disk, when the whole save is done; a callback's flush has nothing to add.
    public override void Flush() { }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
