using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Phi2Native.Cuda;

/// <summary>
/// The on-disk part of the kernel cache: one file per key, <c>{key}.cubin</c>, holding a header and the image.
/// Entries are written to a temporary file in the same folder and renamed over the final name, so a reader sees a
/// whole entry or none; every read is validated (magic, key, length, SHA-256 of the image), so a truncated or
/// corrupt entry is never loaded - it is deleted and the caller recompiles. A folder that cannot be created, read or
/// written turns the cache off for this process with one warning instead of failing the compile.
/// </summary>
/// <remarks>
/// Entry layout (little-endian): 8 bytes magic <c>PHI2KC01</c>, 32 bytes key (the SHA-256 the file is named after),
/// 8 bytes image length, 32 bytes SHA-256 of the image, then the image.
/// </remarks>
internal sealed class KernelDiskCache
{
    internal static ReadOnlySpan<byte> Magic => "PHI2KC01"u8;
    internal const int HeaderBytes = 8 + 32 + 8 + 32;
    internal const string Extension = ".cubin";

    private readonly KernelCacheOptions _options;
    private int _enabled;

    /// <summary>Opens (creating if needed) the folder of <paramref name="options"/>; a folder that cannot be made disables the cache with a warning.</summary>
    public KernelDiskCache(KernelCacheOptions options)
    {
        _options = options;
        Directory = options.Directory;
        if (Directory is null) return;
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
            _enabled = 1;
        }
        catch (Exception e) when (IsFileSystemError(e))
        {
            _options.Warn($"the kernel cache folder {Directory} cannot be used ({e.Message}); kernels are compiled without a disk cache");
        }
    }

    /// <summary>The folder, or null when the cache was never configured.</summary>
    public string? Directory { get; }

    /// <summary>Whether entries are read and written (false when disabled, or after a file system error).</summary>
    public bool Enabled => Volatile.Read(ref _enabled) == 1;

    /// <summary>The path of <paramref name="key"/>'s entry.</summary>
    public string PathOf(string key) => Path.Combine(Directory ?? throw new InvalidOperationException("the disk cache has no folder"), key + Extension);

    /// <summary>The image stored under <paramref name="key"/>, or null when there is none or it is damaged (then it is deleted).</summary>
    public byte[]? TryRead(string key)
    {
        if (!Enabled) return null;
        string path = PathOf(key);
        byte[] bytes;
        try
        {
            if (!File.Exists(path)) return null;
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (IsFileSystemError(e))
        {
            Disable($"kernel cache entry {path} cannot be read ({e.Message})");
            return null;
        }
        byte[]? image = Decode(key, bytes);
        if (image is null)
        {
            // Truncated (a crash of an old writer), corrupt, or someone else's file: never load it; the caller recompiles and rewrites.
            try { File.Delete(path); } catch (Exception e) when (IsFileSystemError(e)) { }
        }
        return image;
    }

    /// <summary>Stores <paramref name="image"/> under <paramref name="key"/>: written to a temporary file, then renamed into place.</summary>
    public void Write(string key, byte[] image)
    {
        if (!Enabled) return;
        string path = PathOf(key);
        string temporary = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(Encode(key, image));
                stream.Flush(flushToDisk: true);
            }
            // Rename is atomic within a folder: a concurrent reader sees the old entry, the new one, or none.
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (IsFileSystemError(e))
        {
            try { File.Delete(temporary); } catch (Exception) { /* best effort: a stale .tmp is never read */ }
            Disable($"kernel cache entry {path} cannot be written ({e.Message})");
        }
    }

    /// <summary>The bytes of an entry: header, then image.</summary>
    internal static byte[] Encode(string key, byte[] image)
    {
        var entry = new byte[HeaderBytes + image.Length];
        Magic.CopyTo(entry);
        KeyBytes(key).CopyTo(entry.AsSpan(8));
        BinaryPrimitives.WriteInt64LittleEndian(entry.AsSpan(40), image.Length);
        SHA256.HashData(image).CopyTo(entry.AsSpan(48));
        image.CopyTo(entry.AsSpan(HeaderBytes));
        return entry;
    }

    /// <summary>The image of an entry, or null unless magic, key, length and checksum all agree.</summary>
    internal static byte[]? Decode(string key, ReadOnlySpan<byte> entry)
    {
        if (entry.Length < HeaderBytes || !entry[..8].SequenceEqual(Magic)) return null;
        if (!entry.Slice(8, 32).SequenceEqual(KeyBytes(key))) return null;
        long length = BinaryPrimitives.ReadInt64LittleEndian(entry.Slice(40, 8));
        if (length != entry.Length - HeaderBytes) return null;
        var image = entry[HeaderBytes..];
        if (!SHA256.HashData(image).AsSpan().SequenceEqual(entry.Slice(48, 32))) return null;
        return image.ToArray();
    }

    private static byte[] KeyBytes(string key)
    {
        if (key.Length != 64) throw new ArgumentException($"a cache key is 64 hexadecimal digits, got '{key}'", nameof(key));
        return Convert.FromHexString(key);
    }

    private void Disable(string what)
    {
        if (Interlocked.Exchange(ref _enabled, 0) == 1)
            _options.Warn($"{what}; the disk cache is off for the rest of this process, kernels are compiled without it");
    }

    private static bool IsFileSystemError(Exception e) =>
        e is IOException or UnauthorizedAccessException or NotSupportedException or System.Security.SecurityException;

    /// <summary>The SHA-256 of <paramref name="fields"/>, each length-prefixed so no two field lists hash alike, as 64 lowercase hex digits.</summary>
    internal static string Hash(IEnumerable<string> fields)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> length = stackalloc byte[8];
        foreach (string field in fields)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(field);
            BinaryPrimitives.WriteInt64LittleEndian(length, bytes.Length);
            hash.AppendData(length);
            hash.AppendData(bytes);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
