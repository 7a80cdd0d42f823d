using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using Phi2Native.Tensors;

namespace Phi2Native.IO;

/// <summary>
/// Builds a safetensors file from tensors added in order and saves it atomically.
/// </summary>
/// <remarks>
/// <para>
/// The output is what the reference implementation reads: the header lists the tensors in the order they were
/// added, with contiguous data offsets and no gaps, and is padded with spaces so the data section starts on an
/// 8-byte boundary. Tensors are not padded between each other (the format forbids gaps), so a tensor that
/// follows an odd-sized F16 one is not itself aligned; readers must not assume element alignment.
/// </para>
/// <para>
/// <see cref="Add"/>, <see cref="AddSingle"/> and <see cref="AddInt32"/> copy their data, which is simple and
/// right for adapters and test files. For multi-gigabyte outputs, <see cref="AddStreamed"/> keeps only a
/// callback that writes the bytes during <see cref="Save"/>, so nothing is held twice in memory.
/// </para>
/// </remarks>
public sealed class SafeTensorsWriter
{
    private readonly List<Entry> _entries = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>String metadata written as the header's <c>__metadata__</c> (keys in ordinal order; omitted when empty).</summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Number of tensors added so far.</summary>
    public int Count => _entries.Count;

    /// <summary>Adds a tensor from its raw little-endian bytes, which are copied.</summary>
    /// <param name="name">Unique, non-empty tensor name other than <c>__metadata__</c>.</param>
    /// <param name="dtype">Element type of <paramref name="data"/>.</param>
    /// <param name="shape">Dimensions (non-negative); empty for a scalar. Copied.</param>
    /// <param name="data">Exactly product(<paramref name="shape"/>) x element size bytes.</param>
    /// <exception cref="ArgumentException">The name is empty, reserved or already added; a dimension is negative; or the data length does not match the shape. The message names the tensor.</exception>
    public void Add(string name, DType dtype, long[] shape, ReadOnlySpan<byte> data)
    {
        long[] dims = CheckNewEntry(name, dtype, shape);
        long expected = ByteLength(name, dtype, dims);
        if (data.Length != expected)
            throw new ArgumentException(
                $"tensor '{name}': {data.Length} bytes of data, but shape {Text(dims)} of {dtype.SafeTensorsName()} needs {expected}",
                nameof(data));
        AddEntry(new Entry(name, dtype, dims, expected, data.ToArray(), null));
    }

    /// <summary>Adds a float tensor, stored as <paramref name="storeAs"/> (F32, F16, BF16 or F64).</summary>
    /// <remarks>
    /// Narrowing to F16 and BF16 rounds to nearest, ties to even, as PyTorch does; values beyond the type's range
    /// become infinities, and NaN stays NaN. F64 is exact.
    /// </remarks>
    /// <param name="name">Unique, non-empty tensor name other than <c>__metadata__</c>.</param>
    /// <param name="values">The elements, row-major; their count must equal product(<paramref name="shape"/>).</param>
    /// <param name="shape">Dimensions (non-negative); empty for a scalar. Copied.</param>
    /// <param name="storeAs">The dtype written to the file.</param>
    /// <exception cref="ArgumentException">The name is empty, reserved or already added; a dimension is negative; the element count does not match the shape; or <paramref name="storeAs"/> is not floating point.</exception>
    public void AddSingle(string name, ReadOnlySpan<float> values, long[] shape, DType storeAs = DType.F32)
    {
        if (!storeAs.IsFloatingPoint())
            throw new ArgumentException($"tensor '{name}': cannot store float values as {storeAs}", nameof(storeAs));
        long[] dims = CheckNewEntry(name, storeAs, shape);
        CheckElementCount(name, dims, values.Length, nameof(values));

        var bytes = new byte[InMemoryLength(name, (long)values.Length * storeAs.SizeInBytes())];
        switch (storeAs)
        {
            case DType.F32:
                MemoryMarshal.AsBytes(values).CopyTo(bytes);
                break;
            case DType.F64:
                Span<double> doubles = MemoryMarshal.Cast<byte, double>(bytes.AsSpan());
                for (int i = 0; i < values.Length; i++) doubles[i] = values[i];
                break;
            case DType.F16:
                // TensorPrimitives rounds to nearest even, like the scalar (Half) conversion.
                TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan()));
                break;
            case DType.BF16:
                Span<ushort> bf16 = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
                for (int i = 0; i < values.Length; i++) bf16[i] = DTypes.SingleToBFloat16(values[i]);
                break;
        }
        AddEntry(new Entry(name, storeAs, dims, bytes.Length, bytes, null));
    }

    /// <summary>Adds an I32 tensor (token ids, targets). The values are copied.</summary>
    /// <param name="name">Unique, non-empty tensor name other than <c>__metadata__</c>.</param>
    /// <param name="values">The elements, row-major; their count must equal product(<paramref name="shape"/>).</param>
    /// <param name="shape">Dimensions (non-negative); empty for a scalar. Copied.</param>
    /// <exception cref="ArgumentException">The name is empty, reserved or already added; a dimension is negative; or the element count does not match the shape.</exception>
    public void AddInt32(string name, ReadOnlySpan<int> values, long[] shape)
    {
        long[] dims = CheckNewEntry(name, DType.I32, shape);
        CheckElementCount(name, dims, values.Length, nameof(values));
        long byteLength = InMemoryLength(name, (long)values.Length * 4);
        AddEntry(new Entry(name, DType.I32, dims, byteLength, MemoryMarshal.AsBytes(values).ToArray(), null));
    }

    /// <summary>
    /// Adds a tensor whose bytes are produced during <see cref="Save"/> by <paramref name="writeData"/>, which must
    /// write exactly product(<paramref name="shape"/>) x element size bytes to the stream it is given.
    /// </summary>
    /// <remarks>
    /// Use this for outputs too large to hold in memory twice (a merged checkpoint, for example): the callback can
    /// convert and write one block at a time. It may be called once per <see cref="Save"/>. Writing more bytes than
    /// declared throws at once; writing fewer fails the save. Either way, and if the callback itself throws, the
    /// target file is left as it was.
    /// </remarks>
    /// <param name="name">Unique, non-empty tensor name other than <c>__metadata__</c>.</param>
    /// <param name="dtype">Element type of the bytes the callback writes.</param>
    /// <param name="shape">Dimensions (non-negative); empty for a scalar. Copied.</param>
    /// <param name="writeData">Writes the tensor's little-endian bytes, row-major, to the given write-only stream.</param>
    /// <exception cref="ArgumentException">The name is empty, reserved or already added; a dimension is negative; or the byte size overflows.</exception>
    public void AddStreamed(string name, DType dtype, long[] shape, Action<Stream> writeData)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        long[] dims = CheckNewEntry(name, dtype, shape);
        AddEntry(new Entry(name, dtype, dims, ByteLength(name, dtype, dims), null, writeData));
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/> atomically: into a temporary file in the same folder, flushed to
    /// disk, then renamed over the target. A failure part-way leaves any existing target untouched and removes the
    /// temporary file.
    /// </summary>
    /// <param name="path">The output file; its folder must exist.</param>
    /// <exception cref="ArgumentException">A metadata key or value is null, or a key is empty.</exception>
    /// <exception cref="InvalidOperationException">A streamed tensor's callback wrote a different number of bytes than its shape needs.</exception>
    /// <exception cref="IOException">The file cannot be written (its folder is missing, it is a folder, ...); the message names the path.</exception>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(fullPath)!;
        // Said plainly, before the temporary file's name can end up in the message instead.
        if (PathChecks.FolderProblem(folder) is { } problem) throw new DirectoryNotFoundException($"cannot write '{fullPath}': its folder '{folder}' {problem}");
        if (Directory.Exists(fullPath)) throw new IOException($"cannot write '{fullPath}': it is a folder");
        byte[] header = BuildHeader();

        // Same folder, so the final rename stays on one file system and is atomic. Hidden and unique, so a
        // crash leaves an obvious stray rather than something that looks like a checkpoint.
        string tempPath = Path.Combine(folder, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(tempPath, FileMode.CreateNew, FileAccess.Write, FileShare.None,
                       bufferSize: 1 << 20))
            {
                Span<byte> prefix = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
                stream.Write(prefix);
                stream.Write(header);
                foreach (Entry entry in _entries) WriteData(entry, stream);
                // Durable before it becomes visible: a power cut after the rename must not expose a file whose
                // data blocks never reached the disk.
                stream.Flush(flushToDisk: true);
            }
            File.Move(tempPath, fullPath, overwrite: true);
        }
        catch
        {
            TryDelete(tempPath);
            throw;
        }
    }

    private static void WriteData(Entry entry, FileStream stream)
    {
        if (entry.Data is not null)
        {
            stream.Write(entry.Data);
            return;
        }

        var bounded = new BoundedWriteStream(stream, entry.Name, entry.ByteLength);
        entry.WriteData!(bounded);
        if (bounded.Written != entry.ByteLength)
            throw new InvalidOperationException(
                $"tensor '{entry.Name}': the streamed callback wrote {bounded.Written} bytes, but shape {Text(entry.Shape)} of {entry.DType.SafeTensorsName()} needs {entry.ByteLength}");
    }

    private byte[] BuildHeader()
    {
        var json = new MemoryStream();
        // Relaxed escaping keeps non-ASCII names readable in the file; the header is never embedded in HTML.
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (Metadata.Count > 0)
            {
                writer.WriteStartObject(SafeTensorsHeader.MetadataKey);
                // Sorted so that the same inputs always give the same bytes.
                foreach (KeyValuePair<string, string> pair in Metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    if (string.IsNullOrEmpty(pair.Key) || pair.Value is null)
                        throw new ArgumentException($"metadata entry '{pair.Key}' needs a non-empty key and a non-null value", nameof(Metadata));
                    writer.WriteString(pair.Key, pair.Value);
                }
                writer.WriteEndObject();
            }

            long offset = 0;
            foreach (Entry entry in _entries)
            {
                writer.WriteStartObject(entry.Name);
                writer.WriteString("dtype", entry.DType.SafeTensorsName());
                writer.WriteStartArray("shape");
                foreach (long dim in entry.Shape) writer.WriteNumberValue(dim);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + entry.ByteLength);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += entry.ByteLength;
            }
            writer.WriteEndObject();
        }

        // Pad with spaces (valid JSON whitespace) so that 8 + header length is a multiple of 8: the data section
        // then starts aligned, which lets readers map F64/F32 tensors without an unaligned first element.
        int length = (int)json.Length;
        int padded = (length + 7) & ~7;
        byte[] header = new byte[padded];
        json.GetBuffer().AsSpan(0, length).CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }

    private long[] CheckNewEntry(string name, DType dtype, long[] shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (name == SafeTensorsHeader.MetadataKey)
            throw new ArgumentException($"'{name}' is reserved for the file's metadata and cannot name a tensor", nameof(name));
        if (_names.Contains(name))
            throw new ArgumentException($"tensor '{name}' was already added", nameof(name));
        _ = dtype.SizeInBytes(); // rejects an out-of-range enum value up front
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0)
                throw new ArgumentException($"tensor '{name}': dimension {i} of shape {Text(shape)} is negative", nameof(shape));
        }
        return (long[])shape.Clone();
    }

    private void AddEntry(Entry entry)
    {
        _names.Add(entry.Name);
        _entries.Add(entry);
    }

    private static void CheckElementCount(string name, long[] shape, int count, string parameterName)
    {
        long expected = ElementCount(name, shape);
        if (count != expected)
            throw new ArgumentException(
                $"tensor '{name}': {count} values, but shape {Text(shape)} has {expected} elements", parameterName);
    }

    private static long ElementCount(string name, long[] shape)
    {
        try
        {
            long count = 1;
            foreach (long dim in shape) count = checked(count * dim);
            return count;
        }
        catch (OverflowException e)
        {
            throw new ArgumentException($"tensor '{name}': the element count of shape {Text(shape)} overflows", nameof(shape), e);
        }
    }

    private static long ByteLength(string name, DType dtype, long[] shape)
    {
        long count = ElementCount(name, shape);
        if (count > long.MaxValue / dtype.SizeInBytes())
            throw new ArgumentException($"tensor '{name}': the byte size of shape {Text(shape)} overflows", nameof(shape));
        return count * dtype.SizeInBytes();
    }

    private static int InMemoryLength(string name, long byteLength)
    {
        if (byteLength > Array.MaxLength)
            throw new ArgumentException($"tensor '{name}': {byteLength} bytes do not fit in one array; use AddStreamed");
        return (int)byteLength;
    }

    private static string Text(long[] shape) => "[" + string.Join(", ", shape) + "]";

    private static void TryDelete(string path)
    {
        // Best effort: the original exception is the one worth reporting, not a failure to clean up after it.
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>One tensor to write: either its bytes (<paramref name="Data"/>) or a callback that writes them.</summary>
    private sealed record Entry(string Name, DType DType, long[] Shape, long ByteLength, byte[]? Data, Action<Stream>? WriteData);
}
