using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.IO;

/// <summary>
/// A safetensors file opened for reading: the header is parsed and validated once, and tensor data is read
/// straight from a read-only memory mapping of the file.
/// </summary>
/// <remarks>
/// <para>
/// The file is never copied into managed memory: a multi-gigabyte checkpoint costs only address space, and
/// the operating system pages in the tensors actually read. Spans returned by <see cref="GetBytes"/> point
/// into the mapping and are valid until <see cref="Dispose"/>.
/// </para>
/// <para>
/// Every structural problem is found by <see cref="Open"/> and reported as a <see cref="SafeTensorsFormatException"/>
/// naming the file and, where there is one, the tensor. After that, reads cannot go outside the file.
/// Another process truncating the file while it is mapped is outside what any reader can guard against.
/// </para>
/// <para>Reads may run concurrently from several threads; <see cref="Dispose"/> must not race with them.</para>
/// <para>Multi-byte values are read as little-endian, which is what the format specifies and what every host .NET runs on here uses.</para>
/// </remarks>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    // Widening runs over slices of this many elements, so that no span ever exceeds int.MaxValue bytes
    // even for a tensor whose byte size does.
    private const int ChunkElements = 1 << 20;

    private readonly IReadOnlyList<SafeTensorInfo> _tensors;
    private readonly Dictionary<string, SafeTensorInfo> _byName;
    private readonly IReadOnlyDictionary<string, string> _metadata;
    private readonly MemoryMappedFile _mapping;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _data; // first byte of the data section, inside the view
    private bool _disposed;

    private SafeTensorsFile(string path, MemoryMappedFile mapping, MemoryMappedViewAccessor view, byte* data,
        SafeTensorsHeader.Parsed header)
    {
        FilePath = path;
        _mapping = mapping;
        _view = view;
        _data = data;
        _metadata = new System.Collections.ObjectModel.ReadOnlyDictionary<string, string>(header.Metadata);
        // Read-only wrappers, so a caller that casts cannot change what every other reader of this file sees.
        _tensors = Array.AsReadOnly(header.Tensors);
        _byName = _tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The full path of the file, as used in error messages.</summary>
    public string FilePath { get; }

    /// <summary>The header's <c>__metadata__</c> map (for example <c>{"format": "pt"}</c>); empty when the file has none.</summary>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public IReadOnlyDictionary<string, string> Metadata
    {
        get
        {
            ThrowIfDisposed();
            return _metadata;
        }
    }

    /// <summary>Every tensor, in the order the header lists them, including those whose dtype the engine does not compute with.</summary>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public IReadOnlyList<SafeTensorInfo> Tensors
    {
        get
        {
            ThrowIfDisposed();
            return _tensors;
        }
    }

    /// <summary>Opens, maps and validates a safetensors file.</summary>
    /// <param name="path">The file to open; it stays open (shared for reading) until <see cref="Dispose"/>.</param>
    /// <exception cref="SafeTensorsFormatException">
    /// The file is too short, its header length is 0, over 100 MB or past the end of the file, the header is not
    /// UTF-8 JSON or not an object, a key repeats, an entry is malformed, has an unknown dtype, a byte size that
    /// does not match its shape, or offsets past the end of the file, two tensors overlap, bytes of the data section
    /// belong to no tensor (a gap between tensors or bytes after the last one), or <c>__metadata__</c> is not a
    /// string-to-string object.
    /// </exception>
    /// <exception cref="IOException">The file cannot be opened (missing, no permission, ...).</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);

        var stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
        MemoryMappedFile? mapping = null;
        MemoryMappedViewAccessor? view = null;
        bool pointerAcquired = false;
        try
        {
            long fileLength = stream.Length;
            // Checked before mapping: an empty file cannot be mapped at all, and the message should be about the format.
            if (fileLength < 8)
                throw new SafeTensorsFormatException(fullPath,
                    $"the file is {fileLength} bytes, shorter than the 8-byte header length prefix");

            mapping = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0,
                MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = mapping.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* basePointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            pointerAcquired = true;
            // The view may start before the requested offset on platforms that align views; skip that slack.
            basePointer += view.PointerOffset;

            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(basePointer, 8));
            if (headerLength == 0)
                throw new SafeTensorsFormatException(fullPath, "the header length is 0; even an empty file has the header '{}'");
            if (headerLength > SafeTensorsHeader.MaxHeaderBytes)
                throw new SafeTensorsFormatException(fullPath,
                    $"the header length {headerLength} is over the {SafeTensorsHeader.MaxHeaderBytes}-byte limit (corrupt length prefix?)");
            if ((long)headerLength > fileLength - 8)
                throw new SafeTensorsFormatException(fullPath,
                    $"the header length {headerLength} runs past the end of the file ({fileLength} bytes)");

            var header = new ReadOnlySpan<byte>(basePointer + 8, (int)headerLength);
            long dataStart = 8 + (long)headerLength;
            SafeTensorsHeader.Parsed parsed = SafeTensorsHeader.Parse(fullPath, header, fileLength - dataStart);
            return new SafeTensorsFile(fullPath, mapping, view, basePointer + dataStart, parsed);
        }
        catch
        {
            if (pointerAcquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            if (mapping is not null) mapping.Dispose();
            else stream.Dispose(); // the mapping owns the stream once it exists
            throw;
        }
    }

    /// <summary>True when the file has a tensor named <paramref name="name"/>.</summary>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public bool Contains(string name)
    {
        ThrowIfDisposed();
        return _byName.ContainsKey(name);
    }

    /// <summary>Looks up a tensor's entry without throwing when it is absent.</summary>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public bool TryGet(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SafeTensorInfo? info)
    {
        ThrowIfDisposed();
        return _byName.TryGetValue(name, out info);
    }

    /// <summary>The entry of the tensor named <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">The file has no such tensor; the message names the file and the tensor.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public SafeTensorInfo Get(string name)
    {
        ThrowIfDisposed();
        if (_byName.TryGetValue(name, out SafeTensorInfo? info)) return info;
        throw new KeyNotFoundException($"{FilePath}: no tensor named '{name}' (the file has {_tensors.Count} tensors)");
    }

    /// <summary>
    /// The raw little-endian bytes of a tensor, whatever its dtype, straight from the mapping (no copy).
    /// The span is valid until the file is disposed.
    /// </summary>
    /// <exception cref="KeyNotFoundException">The file has no such tensor.</exception>
    /// <exception cref="NotSupportedException">The tensor is 2 GiB or larger, more than a span can address.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        SafeTensorInfo info = Get(name);
        if (info.ByteLength > int.MaxValue)
            throw new NotSupportedException(
                $"{FilePath}: tensor '{name}' is {info.ByteLength} bytes, more than one span can address; use ReadAsSingle or ReadInt32");
        return new ReadOnlySpan<byte>(_data + info.DataBegin, (int)info.ByteLength);
    }

    /// <summary>Reads a floating-point tensor (F32, F64, F16 or BF16) into <paramref name="destination"/>, widening or narrowing to float.</summary>
    /// <param name="name">The tensor.</param>
    /// <param name="destination">Receives the elements in row-major order; its length must equal the tensor's element count.</param>
    /// <exception cref="KeyNotFoundException">The file has no such tensor.</exception>
    /// <exception cref="ArgumentException">The destination length differs from the element count.</exception>
    /// <exception cref="InvalidOperationException">The tensor is I32, not floating point.</exception>
    /// <exception cref="NotSupportedException">The tensor's dtype is one the engine does not compute with (U8, I64, F8_E4M3, ...).</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public void ReadAsSingle(string name, Span<float> destination)
    {
        SafeTensorInfo info = Get(name);
        DType dtype = RequireEngineDType(info);
        if (!dtype.IsFloatingPoint())
            throw new InvalidOperationException(
                $"{FilePath}: tensor '{name}' is {info.DTypeName}, not a floating-point type; use ReadInt32");
        CheckLength(info, destination.Length, nameof(destination));

        int elementSize = dtype.SizeInBytes();
        byte* source = _data + info.DataBegin;
        for (int start = 0; start < destination.Length; start += ChunkElements)
        {
            int count = Math.Min(ChunkElements, destination.Length - start);
            var chunk = new ReadOnlySpan<byte>(source + (long)start * elementSize, count * elementSize);
            DTypes.WidenToSingle(chunk, dtype, destination.Slice(start, count));
        }
    }

    /// <summary>Reads a floating-point tensor into a new array; see <see cref="ReadAsSingle(string, Span{float})"/>.</summary>
    /// <exception cref="KeyNotFoundException">The file has no such tensor.</exception>
    /// <exception cref="InvalidOperationException">The tensor is I32, not floating point.</exception>
    /// <exception cref="NotSupportedException">The dtype is not one the engine computes with, or the tensor has more elements than an array holds.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public float[] ReadAsSingle(string name)
    {
        SafeTensorInfo info = Get(name);
        var values = new float[ToArrayLength(info)];
        ReadAsSingle(name, values);
        return values;
    }

    /// <summary>Reads an I32 tensor into <paramref name="destination"/>.</summary>
    /// <param name="name">The tensor.</param>
    /// <param name="destination">Receives the elements in row-major order; its length must equal the tensor's element count.</param>
    /// <exception cref="KeyNotFoundException">The file has no such tensor.</exception>
    /// <exception cref="ArgumentException">The destination length differs from the element count.</exception>
    /// <exception cref="InvalidOperationException">The tensor is floating point, not I32.</exception>
    /// <exception cref="NotSupportedException">The tensor's dtype is one the engine does not compute with (I64, U32, ...).</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public void ReadInt32(string name, Span<int> destination)
    {
        SafeTensorInfo info = Get(name);
        DType dtype = RequireEngineDType(info);
        if (dtype != DType.I32)
            throw new InvalidOperationException($"{FilePath}: tensor '{name}' is {info.DTypeName}, not I32; use ReadAsSingle");
        CheckLength(info, destination.Length, nameof(destination));

        byte* source = _data + info.DataBegin;
        for (int start = 0; start < destination.Length; start += ChunkElements)
        {
            int count = Math.Min(ChunkElements, destination.Length - start);
            new ReadOnlySpan<byte>(source + (long)start * 4, count * 4)
                .CopyTo(MemoryMarshal.AsBytes(destination.Slice(start, count)));
        }
    }

    /// <summary>Reads an I32 tensor into a new array; see <see cref="ReadInt32(string, Span{int})"/>.</summary>
    /// <exception cref="KeyNotFoundException">The file has no such tensor.</exception>
    /// <exception cref="InvalidOperationException">The tensor is floating point, not I32.</exception>
    /// <exception cref="NotSupportedException">The dtype is not one the engine computes with, or the tensor has more elements than an array holds.</exception>
    /// <exception cref="ObjectDisposedException">The file has been disposed.</exception>
    public int[] ReadInt32(string name)
    {
        SafeTensorInfo info = Get(name);
        var values = new int[ToArrayLength(info)];
        ReadInt32(name, values);
        return values;
    }

    /// <summary>Releases the mapping and closes the file. Spans obtained from <see cref="GetBytes"/> must no longer be used. Safe to call twice.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _mapping.Dispose();
    }

    private DType RequireEngineDType(SafeTensorInfo info) => info.DType ??
        throw new NotSupportedException(
            $"{FilePath}: tensor '{info.Name}' has dtype {info.DTypeName}, which the engine does not compute with (its raw bytes are available through GetBytes)");

    private void CheckLength(SafeTensorInfo info, int length, string parameterName)
    {
        if (length != info.ElementCount)
            throw new ArgumentException(
                $"{FilePath}: tensor '{info.Name}' has {info.ElementCount} elements (shape {info.ShapeText}), but the destination holds {length}",
                parameterName);
    }

    private int ToArrayLength(SafeTensorInfo info)
    {
        // Check the dtype first so that an unsupported tensor reports that, not its size.
        RequireEngineDType(info);
        if (info.ElementCount > Array.MaxLength)
            throw new NotSupportedException(
                $"{FilePath}: tensor '{info.Name}' has {info.ElementCount} elements, more than one array holds");
        return (int)info.ElementCount;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
