using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// <see cref="IKernelCompiler"/> over NVRTC: the headers go through nvrtcCreateProgram's headers/includeNames (so
/// <c>#include "common.cuh"</c> needs no include path), the image is the cubin (nvrtcGetCUBIN), and a failed compile
/// throws <see cref="KernelCompileException"/> with NVRTC's log.
/// </summary>
/// <remarks>
/// NVRTC is thread-safe for distinct programs, so compiles may run on several threads at once. Each compile runs on a
/// thread of its own with a <see cref="CompilerStackBytes"/> stack: NVRTC's front end recurses deeply (NVIDIA's CCCL
/// measured 1.0-1.5 MiB for its block primitives, and runs its own compiler with 8 MiB), while .NET's secondary
/// threads (NUnit's workers, the thread pool) get 1.5 MiB, and an overflow kills the process instead of throwing.
/// </remarks>
internal sealed unsafe class NvrtcKernelCompiler : IKernelCompiler
{
    /// <summary>The stack of the compile thread: twice a Linux main thread's 8 MiB; only touched pages cost memory.</summary>
    internal const int CompilerStackBytes = 16 << 20;

    private readonly Lazy<(string Version, string CacheIdentity)> _version = new(QueryVersion, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// "NVRTC 12.8 (libnvrtc.so.12.8.93)": nvrtcVersion gives only major.minor, so the name of the library file loaded
    /// (links followed) is added; it is what reports and tables print.
    /// </summary>
    public string Version => _version.Value.Version;

    /// <summary>
    /// <see cref="Version"/> and the identity of the library file (<see cref="FileIdentity(string)"/>), for the cache
    /// key: pip's <c>libnvrtc.so.13</c> carries no patch number in its name, and a patch release may generate different
    /// code, so another file must not reuse old cubins. Kept out of <see cref="Version"/>, which must read the same on
    /// every machine with the same NVRTC.
    /// </summary>
    public string CacheIdentity => _version.Value.CacheIdentity;

    public KernelCompilation Compile(string fileName, string source, IReadOnlyList<KernelHeader> headers, IReadOnlyList<string> options)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(headers);
        ArgumentNullException.ThrowIfNull(options);
        _ = Version; // binds NVRTC, or says clearly why it cannot
        KernelCompilation? result = null;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try { result = CompileHere(fileName, source, headers, options); }
            catch (Exception e) { error = ExceptionDispatchInfo.Capture(e); }
        }, CompilerStackBytes) { IsBackground = true, Name = $"NVRTC {fileName}" };
        thread.Start();
        thread.Join();
        error?.Throw();
        return result!;
    }

    private static KernelCompilation CompileHere(string fileName, string source, IReadOnlyList<KernelHeader> headers, IReadOnlyList<string> options)
    {
        var texts = new nint[headers.Count];
        var names = new nint[headers.Count];
        try
        {
            for (int i = 0; i < headers.Count; i++)
            {
                texts[i] = Marshal.StringToCoTaskMemUTF8(headers[i].Text);
                names[i] = Marshal.StringToCoTaskMemUTF8(headers[i].Name);
            }
            nint program;
            fixed (nint* t = texts, n = names)
                Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out program, source, fileName, headers.Count, (byte**)t, (byte**)n));
            try
            {
                NvrtcResult result = Nvrtc.Compile(program, options);
                string log = Nvrtc.GetLog(program);
                if (result != NvrtcResult.Success) throw new KernelCompileException(fileName, options, Nvrtc.Describe(result).Name, log);
                return new KernelCompilation(Nvrtc.GetCubin(program), log);
            }
            finally
            {
                Nvrtc.nvrtcDestroyProgram(ref program);
            }
        }
        finally
        {
            foreach (nint p in texts) Marshal.FreeCoTaskMem(p);
            foreach (nint p in names) Marshal.FreeCoTaskMem(p);
        }
    }

    private static (string Version, string CacheIdentity) QueryVersion()
    {
        try
        {
            Nvrtc.Check(Nvrtc.nvrtcVersion(out int major, out int minor));
            string? path = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc).LoadedFrom;
            FileInfo? file = path is null ? null : RealFile(path);
            string version = DescribeVersion(major, minor, file?.Name);
            return (version, CacheIdentityOf(version, path is null ? null : FileIdentity(path)));
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            string why = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc).Failure ?? e.Message;
            throw new CudaException(CudaException.NvrtcLibrary, "nvrtcVersion", -1, "NVRTC unavailable",
                $"NVRTC (the CUDA run-time compiler, needed to compile the kernels) could not be loaded: {why}");
        }
    }

    /// <summary>"NVRTC 12.8 (libnvrtc.so.12.8.93)"; without a file name, "NVRTC 12.8".</summary>
    internal static string DescribeVersion(int major, int minor, string? libraryFileName) =>
        libraryFileName is null ? $"NVRTC {major}.{minor}" : $"NVRTC {major}.{minor} ({libraryFileName})";

    /// <summary>"NVRTC 13.0 (libnvrtc.so.13), library file 3f2a9c0d1e5b7a64"; the version alone when the file is unknown.</summary>
    internal static string CacheIdentityOf(string version, string? fileIdentity) =>
        fileIdentity is null ? version : $"{version}, library file {fileIdentity}";

    // The file itself: symbolic links (a soname link to the versioned file) followed.
    private static FileInfo RealFile(string path)
    {
        var file = new FileInfo(path);
        try
        {
            return file.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? file;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return file; }
    }

    /// <summary>
    /// The identity of the library file at <paramref name="path"/> (symbolic links followed to the file itself): 16 hex
    /// digits of a hash of its full path, size and modification time, or null when it cannot be read.
    /// </summary>
    internal static string? FileIdentity(string path)
    {
        try
        {
            var file = RealFile(path);
            return file.Exists ? FileIdentity(file.FullName, file.Length, file.LastWriteTimeUtc) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>16 hex digits of a hash of a file's full path, size and modification time.</summary>
    internal static string FileIdentity(string fullPath, long length, DateTime modifiedUtc) =>
        KernelDiskCache.Hash(["library file", fullPath, length.ToString(CultureInfo.InvariantCulture),
            modifiedUtc.Ticks.ToString(CultureInfo.InvariantCulture)])[..16];
}
