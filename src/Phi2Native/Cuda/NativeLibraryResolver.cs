using System.Reflection;
using System.Runtime.InteropServices;

namespace Phi2Native.Cuda;

/// <summary>
/// Maps the logical library names of the CUDA bindings ("cuda", "nvrtc", "cublas", "cublasLt") to the
/// first versioned Linux soname that loads, so one build runs against CUDA 12 or 13 without the SDK's
/// unversioned development symlinks. It is this assembly's one DllImport resolver: other native
/// libraries of the assembly (the kernel emulator) must be added here, not through a second
/// <see cref="NativeLibrary.SetDllImportResolver"/>, which .NET refuses.
/// </summary>
/// <remarks>
/// Linux only: Windows DLL names (nvcuda.dll, nvrtc64_*.dll, cublas64_*.dll) are out of scope, and on
/// Windows every probe simply fails and CUDA reports itself unavailable.
/// The order of candidates is a pure function of the environment (<see cref="SearchDirectories"/>,
/// <see cref="Candidates"/>, <see cref="BuiltinsCandidates"/>) so tests can pin it without a GPU.
/// </remarks>
internal static class NativeLibraryResolver
{
    internal const string Cuda = "cuda";
    internal const string Nvrtc = "nvrtc";
    internal const string Cublas = "cublas";
    internal const string CublasLt = "cublasLt";
    /// <summary>The kernel emulator (kernels/emu), built by the project's MSBuild target beside this assembly.</summary>
    internal const string Emulator = "phi2emu";
    internal const string EmulatorFileName = "libphi2emu.so";

    /// <summary>Sonames per logical name, preferred first; the unversioned name (a development symlink) last.</summary>
    internal static readonly IReadOnlyDictionary<string, string[]> Sonames = new Dictionary<string, string[]>
    {
        [Cuda] = ["libcuda.so.1", "libcuda.so"],
        [Nvrtc] = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
        [Cublas] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
        [CublasLt] = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
    };

    /// <summary>Stands for "ask the dynamic loader" (LD_LIBRARY_PATH, RUNPATH, the ld.so cache) in the candidate list.</summary>
    internal const string LoaderPaths = "the loader's paths";

    private static readonly object Gate = new();
    private static bool _registered;
    private static readonly Dictionary<string, LoadOutcome> Outcomes = new();

    /// <summary>The result of resolving one logical name: a handle and where it came from, or why nothing loaded.</summary>
    internal sealed record LoadOutcome(nint Handle, string? LoadedFrom, string? Failure);

    /// <summary>Installs the resolver for this assembly once; safe to call from any thread, any number of times.</summary>
    internal static void EnsureRegistered()
    {
        lock (Gate)
        {
            if (_registered) return;
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
            _registered = true;
        }
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        Sonames.ContainsKey(libraryName) || libraryName == Emulator
            ? Load(libraryName).Handle
            : 0; // 0: let the runtime's default probing handle other names

    /// <summary>
    /// Loads <paramref name="logicalName"/> once per process and remembers the outcome, so the bindings,
    /// the availability probe and error messages agree on what was found and where.
    /// </summary>
    internal static LoadOutcome Load(string logicalName)
    {
        lock (Gate)
        {
            if (Outcomes.TryGetValue(logicalName, out var known)) return known;
            var outcome = logicalName == Emulator ? LoadEmulator() : LoadUncached(logicalName, ProbeEnvironment.Current());
            Outcomes[logicalName] = outcome;
            return outcome;
        }
    }

    private static LoadOutcome LoadUncached(string logicalName, ProbeEnvironment env)
    {
        foreach (string candidate in Candidates(logicalName, env.Directories))
        {
            bool isPath = candidate.Contains('/');
            // NVRTC loads libnvrtc-builtins at its first compile, by soname; preloading the one beside the
            // libnvrtc we pick makes that lookup succeed even when its folder is not on the loader's path.
            if (logicalName == Nvrtc && isPath) PreloadBuiltins(candidate, env);
            if (NativeLibrary.TryLoad(candidate, out nint handle)) return new LoadOutcome(handle, candidate, null);
        }
        return new LoadOutcome(0, null, NotFoundMessage(logicalName, env));
    }

    /// <summary>
    /// The emulator is ours, not the system's: it is loaded only from beside this assembly (where the build
    /// puts it), never from the loader's paths, so a stale copy elsewhere cannot stand in for the one just built.
    /// </summary>
    private static LoadOutcome LoadEmulator()
    {
        string directory = Path.GetDirectoryName(typeof(NativeLibraryResolver).Assembly.Location) is { Length: > 0 } d ? d : AppContext.BaseDirectory;
        string path = Path.Combine(directory, EmulatorFileName);
        if (NativeLibrary.TryLoad(path, out nint handle)) return new LoadOutcome(handle, path, null);
        return new LoadOutcome(0, null, File.Exists(path)
            ? $"{path} exists but does not load (built for another platform?)"
            : $"{path} is missing: the build makes it with g++ (target BuildKernelEmulator in Phi2Native.csproj)");
    }

    private static void PreloadBuiltins(string nvrtcPath, ProbeEnvironment env)
    {
        string directory = Path.GetDirectoryName(nvrtcPath)!;
        foreach (string builtins in BuiltinsCandidates(directory, Path.GetFileName(nvrtcPath), env.ListFiles(directory)))
            if (NativeLibrary.TryLoad(builtins, out _)) return;
    }

    /// <summary>"libcuda.so.1 is not in the loader's paths (LD_LIBRARY_PATH=..., the ld.so cache), /usr/local/cuda/lib64, ..."</summary>
    internal static string NotFoundMessage(string logicalName, ProbeEnvironment env)
    {
        string[] names = Sonames[logicalName];
        string where = string.Join(", ", env.Directories.Prepend(
            $"{LoaderPaths} (LD_LIBRARY_PATH={(string.IsNullOrEmpty(env.LdLibraryPath) ? "(unset)" : env.LdLibraryPath)}, the ld.so cache)"));
        string also = names.Length > 1 ? $" (also tried {string.Join(", ", names.Skip(1))})" : "";
        return $"{names[0]} is not in {where}{also}";
    }

    /// <summary>
    /// The folders probed after the loader's own paths: <c>$CUDA_PATH/lib64</c>, then <c>/usr/local/cuda/lib64</c>
    /// (the installation the administrator made default), then the versioned <c>/usr/local/cuda-X.Y/lib64</c>
    /// newest first, then <c>/usr/local/nvidia/lib64</c> (where container runtimes mount the driver). Duplicates
    /// are dropped; <paramref name="usrLocalEntries"/> are the names of the entries of /usr/local.
    /// </summary>
    internal static IReadOnlyList<string> SearchDirectories(string? cudaPath, IEnumerable<string> usrLocalEntries)
    {
        var result = new List<string>();
        void Add(string dir)
        {
            string normalized = dir.TrimEnd('/');
            if (normalized.Length > 0 && !result.Contains(normalized)) result.Add(normalized);
        }
        if (!string.IsNullOrWhiteSpace(cudaPath)) Add(Path.Combine(cudaPath.Trim(), "lib64"));
        var versioned = new List<(Version Version, string Name)>();
        bool hasPlain = false;
        foreach (string entry in usrLocalEntries)
        {
            if (entry == "cuda") hasPlain = true;
            else if (entry.StartsWith("cuda-", StringComparison.Ordinal) && TryParseVersion(entry[5..], out var v)) versioned.Add((v, entry));
        }
        if (hasPlain) Add("/usr/local/cuda/lib64");
        foreach (var (_, name) in versioned.OrderByDescending(x => x.Version)) Add($"/usr/local/{name}/lib64");
        Add("/usr/local/nvidia/lib64");
        return result;
    }

    private static bool TryParseVersion(string text, out Version version)
    {
        // "12" alone is a valid folder name (cuda-12) but not a valid System.Version.
        return Version.TryParse(text.Contains('.') ? text : text + ".0", out version!);
    }

    /// <summary>
    /// Everything tried for <paramref name="logicalName"/>, in order: each soname (newest CUDA first) through
    /// the loader, then as a full path in each of <paramref name="directories"/>. A newer soname anywhere beats
    /// an older one, so a CUDA 13 toolkit in /usr/local wins over a CUDA 12 library on LD_LIBRARY_PATH.
    /// </summary>
    internal static IReadOnlyList<string> Candidates(string logicalName, IReadOnlyList<string> directories)
    {
        if (!Sonames.TryGetValue(logicalName, out var names))
            throw new ArgumentException($"unknown CUDA library '{logicalName}'; known: {string.Join(", ", Sonames.Keys)}", nameof(logicalName));
        var result = new List<string>();
        foreach (string soname in names)
        {
            result.Add(soname);
            foreach (string dir in directories) result.Add($"{dir}/{soname}");
        }
        return result;
    }

    /// <summary>
    /// The NVRTC builtins libraries in <paramref name="directory"/> that match <paramref name="nvrtcFileName"/>'s
    /// major version (<c>libnvrtc.so.13</c> takes <c>libnvrtc-builtins.so.13*</c>; the unversioned name takes any),
    /// as full paths: the soname-like shortest name first, then newer versions first.
    /// </summary>
    internal static IReadOnlyList<string> BuiltinsCandidates(string directory, string nvrtcFileName, IEnumerable<string> fileNames)
    {
        const string nvrtcPrefix = "libnvrtc.so";
        string major = nvrtcFileName.StartsWith(nvrtcPrefix + ".", StringComparison.Ordinal) ? nvrtcFileName[(nvrtcPrefix.Length + 1)..] : "";
        string prefix = "libnvrtc-builtins.so." + major;
        return fileNames
            .Where(f => f.StartsWith(prefix, StringComparison.Ordinal) && f.Length > "libnvrtc-builtins.so.".Length)
            .Where(f => major.Length == 0 || f.Length == prefix.Length || f[prefix.Length] == '.')
            .OrderBy(f => f.Count(c => c == '.'))
            .ThenByDescending(f => f, StringComparer.Ordinal)
            .Select(f => $"{directory.TrimEnd('/')}/{f}")
            .ToList();
    }
}

/// <summary>
/// What the resolver reads from the machine: CUDA_PATH, LD_LIBRARY_PATH (for messages only: the loader
/// reads it itself), the folders to probe, and a directory lister. Tests build one by hand.
/// </summary>
internal sealed record ProbeEnvironment(string? CudaPath, string? LdLibraryPath, IReadOnlyList<string> Directories,
    Func<string, IEnumerable<string>> ListFiles)
{
    /// <summary>This process's environment and file system.</summary>
    internal static ProbeEnvironment Current()
    {
        string? cudaPath = Environment.GetEnvironmentVariable("CUDA_PATH");
        var dirs = NativeLibraryResolver.SearchDirectories(cudaPath, SafeList("/usr/local", directories: true));
        return new ProbeEnvironment(cudaPath, Environment.GetEnvironmentVariable("LD_LIBRARY_PATH"), dirs, d => SafeList(d, directories: false));
    }

    private static IEnumerable<string> SafeList(string directory, bool directories)
    {
        try
        {
            if (!Directory.Exists(directory)) return [];
            var entries = directories ? Directory.EnumerateDirectories(directory) : Directory.EnumerateFiles(directory);
            return entries.Select(Path.GetFileName).OfType<string>().ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return []; }
    }
}
