using System.Diagnostics;

namespace Phi2Native.Cuda.Gpu;

/// <summary>Where a kernel image came from.</summary>
internal enum KernelImageOrigin
{
    /// <summary>Compiled by NVRTC just now.</summary>
    Compiled,

    /// <summary>Read from the disk cache.</summary>
    DiskCache,

    /// <summary>Already in this process (compiled or read earlier by the same cache).</summary>
    Memory,
}

/// <summary>One kernel file's compiled image for one architecture.</summary>
/// <param name="FileName">The kernel file, e.g. <c>elementwise.cu</c>.</param>
/// <param name="Image">The cubin, as cuModuleLoadData takes it.</param>
/// <param name="Origin">Compiled, read from disk, or already in memory.</param>
/// <param name="Seconds">Time to compile or read it (0 from memory).</param>
/// <param name="Log">The compiler's log when it compiled with warnings; empty otherwise.</param>
/// <param name="Key">The cache key: SHA-256 of the file name, source, headers, options, architecture and compiler version (with the compiler library file's identity).</param>
internal sealed record KernelImage(string FileName, byte[] Image, KernelImageOrigin Origin, double Seconds, string Log, string Key);

/// <summary>
/// Compiled kernel images for one architecture: each kernel file is compiled by NVRTC on first use (for the device's
/// own <c>sm_XY</c>, to a cubin), kept in memory for the life of the cache, and kept on disk (<see cref="KernelDiskCache"/>)
/// under a key that changes with anything that changes the image - file name, source, every header, options,
/// architecture and compiler version with the identity of the NVRTC library file (<see cref="IKernelCompiler.CacheIdentity"/>)
/// - so a stale image is never reused and nothing needs invalidating.
/// </summary>
/// <remarks>Thread-safe; concurrent requests for one file compile it once.</remarks>
internal sealed class KernelCache
{
    /// <summary>Bumped when the options or the entry format change in a way the other key fields do not show.</summary>
    internal const string KeyFormat = "phi2native-kernel-cache-1";

    private readonly object _gate = new();
    private readonly Dictionary<string, Lazy<KernelImage>> _images = new(StringComparer.Ordinal);
    private readonly IKernelCompiler _compiler;
    private readonly KernelDiskCache _disk;

    /// <summary>Creates the cache for <paramref name="architecture"/> (e.g. <c>sm_90</c>).</summary>
    public KernelCache(KernelSourceCatalog catalog, IKernelCompiler compiler, string architecture, KernelCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(compiler);
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(architecture) || !architecture.StartsWith("sm_", StringComparison.Ordinal))
            throw new ArgumentException($"a real architecture such as sm_90 is needed for a cubin, got '{architecture}'", nameof(architecture));
        Catalog = catalog;
        _compiler = compiler;
        Architecture = architecture;
        Options = CompileOptions(architecture);
        _disk = new KernelDiskCache(options);
    }

    /// <summary>The sources.</summary>
    public KernelSourceCatalog Catalog { get; }

    /// <summary>The target architecture, e.g. <c>sm_90</c>.</summary>
    public string Architecture { get; }

    /// <summary>The NVRTC options every file is compiled with.</summary>
    public IReadOnlyList<string> Options { get; }

    /// <summary>The disk cache folder while the disk cache is in use; null when disabled or turned off after an error.</summary>
    public string? Directory => _disk.Enabled ? _disk.Directory : null;

    /// <summary>
    /// The NVRTC options for <paramref name="architecture"/>: a cubin for exactly that architecture; C++17 (what
    /// the emulator's g++ compiles too); <c>--no-source-include</c>, so only the headers handed over by name can be
    /// included, never a stray common.cuh in the working folder (NVRTC otherwise searches the source's folder,
    /// which for a program named <c>elementwise.cu</c> is the current one).
    /// </summary>
    /// <remarks>
    /// No <c>--generate-line-info</c>, though profilers would like it: NVRTC 11.8 dies with a segmentation fault
    /// compiling elementwise.cu with it (a header passed by name plus the templates of that file), which kills the
    /// host process. Add it back only after NvrtcCompileTests pass with it on the NVRTC versions in use (12, 13).
    /// </remarks>
    public static IReadOnlyList<string> CompileOptions(string architecture) =>
        [$"--gpu-architecture={architecture}", "--std=c++17", "--no-source-include"];

    /// <summary>The cache key of <paramref name="fileName"/> (64 hex digits).</summary>
    public string KeyOf(string fileName) =>
        ComputeKey(fileName, Catalog.SourceOf(fileName), Catalog.Headers, Options, Architecture, _compiler.CacheIdentity);

    /// <summary>
    /// The key: SHA-256 over every input that can change the image, each field length-prefixed;
    /// <paramref name="compilerIdentity"/> is <see cref="IKernelCompiler.CacheIdentity"/>.
    /// </summary>
    public static string ComputeKey(string fileName, string source, IReadOnlyList<KernelHeader> headers, IReadOnlyList<string> options,
        string architecture, string compilerIdentity)
    {
        var fields = new List<string> { KeyFormat, "file", fileName, "source", source };
        foreach (var h in headers) fields.AddRange(["header", h.Name, h.Text]);
        foreach (string o in options) fields.AddRange(["option", o]);
        fields.AddRange(["architecture", architecture, "compiler", compilerIdentity]);
        return KernelDiskCache.Hash(fields);
    }

    /// <summary>
    /// The image of <paramref name="fileName"/>: from memory, else from disk, else compiled (and then written to disk).
    /// A failed compile is remembered: the sources cannot change within the process.
    /// </summary>
    /// <exception cref="KernelCompileException">The file does not compile.</exception>
    /// <exception cref="ArgumentException">No such kernel file.</exception>
    public KernelImage GetImage(string fileName)
    {
        string source = Catalog.SourceOf(fileName);
        Lazy<KernelImage> lazy;
        bool first;
        lock (_gate)
        {
            first = !_images.TryGetValue(fileName, out lazy!);
            if (first) _images[fileName] = lazy = new Lazy<KernelImage>(() => Load(fileName, source), LazyThreadSafetyMode.ExecutionAndPublication);
        }
        KernelImage image = lazy.Value;
        return first ? image : image with { Origin = KernelImageOrigin.Memory, Seconds = 0 };
    }

    private KernelImage Load(string fileName, string source)
    {
        var clock = Stopwatch.StartNew();
        string key = ComputeKey(fileName, source, Catalog.Headers, Options, Architecture, _compiler.CacheIdentity);
        if (_disk.TryRead(key) is { } cached)
            return new KernelImage(fileName, cached, KernelImageOrigin.DiskCache, clock.Elapsed.TotalSeconds, "", key);
        // A file from a folder of kernel sources is compiled under its full path, so the compiler's log names it so.
        string name = Catalog.DisplayNameOf(fileName);
        var compiled = _compiler.Compile(name, source, Catalog.Headers, Options);
        if (compiled.Image.Length == 0)
            throw new KernelCompileException(name, Options, "empty image", "the compiler reported success but returned no image. " + compiled.Log);
        _disk.Write(key, compiled.Image);
        return new KernelImage(fileName, compiled.Image, KernelImageOrigin.Compiled, clock.Elapsed.TotalSeconds, compiled.Log, key);
    }
}
