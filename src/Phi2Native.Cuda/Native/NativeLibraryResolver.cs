using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Phi2Native.Cuda.Native;

/// <summary>
/// Maps the logical library names of the CUDA bindings ("cuda", "nvrtc", "cublas", "cublasLt") to the
/// first versioned Linux soname that loads, so one build runs against CUDA 12 or 13 without the SDK's
/// unversioned development symlinks, whether the libraries come from a toolkit or from NVIDIA's pip wheels.
/// It is this assembly's one DllImport resolver: another native library bound with <c>LibraryImport</c>
/// must be added here, not through a second <see cref="NativeLibrary.SetDllImportResolver"/>, which .NET
/// refuses. The kernel emulator is loaded here too (<see cref="Load"/>), but bound through function
/// pointers (<see cref="Phi2Native.Cuda.Emulator.EmulatorLibrary"/>), since a process may hold several.
/// </summary>
/// <remarks>
/// Linux only: Windows DLL names (nvcuda.dll, nvrtc64_*.dll, cublas64_*.dll) are out of scope, and on
/// Windows every probe simply fails and CUDA reports itself unavailable.
/// The order of candidates is a pure function of the environment (<see cref="SearchDirectories"/>,
/// <see cref="Candidates"/>, <see cref="BlasPairCandidates"/>, <see cref="BuiltinsCandidates"/>) so tests can pin
/// it without a GPU. cuBLAS and cuBLASLt are resolved together, from one folder: libcublas needs the very
/// libcublasLt it was built with, and one from another release fails on missing symbols.
/// </remarks>
internal static partial class NativeLibraryResolver
{
    internal const string Cuda = "cuda";
    internal const string Nvrtc = "nvrtc";
    internal const string Cublas = "cublas";
    internal const string CublasLt = "cublasLt";
    /// <summary>The kernel emulator (kernels/emu), built by the project's MSBuild target beside this assembly (<see cref="EmulatorCandidates"/>).</summary>
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

    /// <summary>One export of each library, to find the file the loader mapped for it (<see cref="MappedFiles"/>).</summary>
    private static readonly IReadOnlyDictionary<string, string> KnownExport = new Dictionary<string, string>
    {
        [Cuda] = "cuInit",
        [Nvrtc] = "nvrtcVersion",
        [Cublas] = "cublasCreate_v2",
        [CublasLt] = "cublasLtCreate",
    };

    /// <summary>Stands for "ask the dynamic loader" (LD_LIBRARY_PATH, RUNPATH, the ld.so cache) in the candidate list.</summary>
    internal const string LoaderPaths = "the loader's paths";

    private static readonly object Gate = new();
    private static bool _registered;
    private static readonly Dictionary<string, LoadOutcome> Outcomes = new();

    /// <summary>The result of resolving one logical name: a handle and the file it came from, or why nothing loaded.</summary>
    /// <param name="Handle">The library's handle; 0 when nothing loaded.</param>
    /// <param name="LoadedFrom">The file: the path probed, or for a library the loader found by soname, the file it mapped (the soname where that cannot be told).</param>
    /// <param name="Failure">Why nothing loaded; null when something did.</param>
    internal sealed record LoadOutcome(nint Handle, string? LoadedFrom, string? Failure)
    {
        /// <summary>"the loader's paths, as libcuda.so.1" when the loader found it by soname; null when loaded by full path.</summary>
        public string? FoundBy { get; init; }

        /// <summary>NVRTC only: the builtins library preloaded beside it, or why none was.</summary>
        public string? Builtins { get; init; }
    }

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
        Sonames.ContainsKey(libraryName)
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
            if (logicalName is Cublas or CublasLt)
            {
                var (blas, lt) = LoadBlasPair(ProbeEnvironment.Current());
                Outcomes[Cublas] = blas;
                Outcomes[CublasLt] = lt;
                return Outcomes[logicalName];
            }
            var outcome = logicalName == Emulator ? LoadEmulator() : LoadUncached(logicalName, ProbeEnvironment.Current());
            Outcomes[logicalName] = outcome;
            return outcome;
        }
    }

    /// <summary>Whether library <paramref name="logicalName"/> loads and exports <paramref name="export"/>.</summary>
    internal static bool HasExport(string logicalName, string export)
    {
        nint handle = Load(logicalName).Handle;
        return handle != 0 && NativeLibrary.TryGetExport(handle, export, out _);
    }

    /// <summary>The first of <see cref="Candidates"/> that loads in <paramref name="env"/>, without the process-wide memory of <see cref="Load"/>.</summary>
    internal static LoadOutcome LoadUncached(string logicalName, ProbeEnvironment env)
    {
        foreach (string candidate in Candidates(logicalName, env.Directories))
        {
            bool isPath = candidate.Contains('/');
            // NVRTC loads libnvrtc-builtins at its first compile, by soname; preloading the one beside the
            // libnvrtc we pick makes that lookup succeed even when its folder is not on the loader's path.
            string? builtins = logicalName == Nvrtc && isPath && File.Exists(candidate) ? PreloadBuiltins(candidate, env) : null;
            if (!NativeLibrary.TryLoad(candidate, out nint handle)) continue;
            var outcome = isPath
                ? new LoadOutcome(handle, candidate, null)
                : new LoadOutcome(handle, MappedFiles.FileOf(handle, KnownExport[logicalName]) ?? candidate, null) { FoundBy = $"{LoaderPaths}, as {candidate}" };
            return logicalName != Nvrtc ? outcome : outcome with
            {
                Builtins = builtins ?? (isPath
                    ? $"none preloaded: no {BuiltinsPattern(candidate)} loads beside it; NVRTC looks for it by soname at its first compile"
                    : "not preloaded (libnvrtc came from the loader's paths): NVRTC looks for it by soname at its first compile"),
            };
        }
        return new LoadOutcome(0, null, NotFoundMessage(logicalName, env));
    }

    /// <summary>
    /// cuBLAS and cuBLASLt from one place (<see cref="BlasPairCandidates"/>): cuBLASLt is loaded first, by full path, so
    /// libcublas's own dependency on it (by soname) binds to that very file.
    /// </summary>
    internal static (LoadOutcome Cublas, LoadOutcome CublasLt) LoadBlasPair(ProbeEnvironment env)
    {
        var (pairs, lone) = BlasPairCandidates(env.Directories, env.ListFiles);
        var notes = new List<string>(lone);
        foreach (var pair in pairs)
        {
            string? directory = pair.Directory;
            nint lt;
            if (directory is null)
            {
                if (!NativeLibrary.TryLoad(pair.CublasLt, out lt)) continue;
                directory = MappedFiles.FileOf(lt, KnownExport[CublasLt]) is { } ltFile ? Path.GetDirectoryName(ltFile) : null;
                if (directory is null || !File.Exists(Path.Combine(directory, pair.Cublas)))
                {
                    notes.Add($"{LoaderPaths} give {pair.CublasLt}{(directory is null ? "" : $" from {directory}")}, but no {pair.Cublas} beside it");
                    NativeLibrary.Free(lt);
                    continue;
                }
            }
            else if (!NativeLibrary.TryLoad($"{directory}/{pair.CublasLt}", out lt))
            {
                notes.Add($"{directory}/{pair.CublasLt} does not load");
                continue;
            }
            string blasPath = $"{directory}/{pair.Cublas}";
            if (!NativeLibrary.TryLoad(blasPath, out nint blas))
            {
                notes.Add($"{blasPath} does not load");
                NativeLibrary.Free(lt);
                continue;
            }
            string? foundBy = pair.Directory is null ? $"{LoaderPaths}, as {pair.CublasLt}; cuBLAS from the same folder" : null;
            return (new LoadOutcome(blas, blasPath, null) { FoundBy = foundBy },
                    new LoadOutcome(lt, $"{directory}/{pair.CublasLt}", null) { FoundBy = foundBy });
        }
        string failure = BlasNotFoundMessage(env, notes);
        return (new LoadOutcome(0, null, failure), new LoadOutcome(0, null, failure));
    }

    /// <summary>
    /// The emulator is ours, not the system's: it is loaded only from where a build or a package puts it
    /// (<see cref="EmulatorCandidates"/>), never from the loader's paths, so a stale copy elsewhere cannot stand in for
    /// the one just built.
    /// </summary>
    private static LoadOutcome LoadEmulator()
    {
        var candidates = EmulatorCandidates(AssemblyDirectory(), AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string);
        foreach (string path in candidates)
            if (File.Exists(path))
                return NativeLibrary.TryLoad(path, out nint handle)
                    ? new LoadOutcome(handle, path, null)
                    : new LoadOutcome(0, null, $"{path} exists but does not load (built for another platform?)");
        return new LoadOutcome(0, null, $"{EmulatorFileName} is in none of {string.Join(", ", candidates.Select(Path.GetDirectoryName))}: " +
            "the build makes it with g++ (target BuildKernelEmulator in Phi2Native.Cuda.csproj), and the Phi2Native package carries it in runtimes/linux-x64/native");
    }

    // This assembly's folder. Its Location is empty in a single-file app, whose folder is then the app's.
    [UnconditionalSuppressMessage("SingleFile", "IL3000", Justification = "An empty Location (a single-file app) falls back to AppContext.BaseDirectory.")]
    private static string AssemblyDirectory() =>
        Path.GetDirectoryName(typeof(NativeLibraryResolver).Assembly.Location) is { Length: > 0 } directory ? directory : AppContext.BaseDirectory;

    /// <summary>
    /// Where the emulator may be, in order: beside this assembly (a build's output, or an app published for linux-x64),
    /// in <c>runtimes/linux-x64/native</c> below it (a host built against the package without a runtime identifier), then
    /// in the host's native search directories (<paramref name="nativeSearchDirectories"/>, the runtime's
    /// NATIVE_DLL_SEARCH_DIRECTORIES: the folders of the native assets its deps.json names).
    /// </summary>
    internal static IReadOnlyList<string> EmulatorCandidates(string assemblyDirectory, string? nativeSearchDirectories)
    {
        var directories = new List<string> { assemblyDirectory, Path.Combine(assemblyDirectory, "runtimes", "linux-x64", "native") };
        foreach (string directory in (nativeSearchDirectories ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            directories.Add(directory);
        return directories.Select(d => Path.TrimEndingDirectorySeparator(Path.GetFullPath(d)))
                          .Distinct(StringComparer.Ordinal)
                          .Select(d => Path.Combine(d, EmulatorFileName))
                          .ToList();
    }

    // The builtins library preloaded beside nvrtcPath, or null when none there loads.
    private static string? PreloadBuiltins(string nvrtcPath, ProbeEnvironment env)
    {
        string directory = Path.GetDirectoryName(nvrtcPath)!;
        foreach (string builtins in BuiltinsCandidates(directory, Path.GetFileName(nvrtcPath), env.ListFiles(directory)))
            if (NativeLibrary.TryLoad(builtins, out _)) return builtins;
        return null;
    }

    private static string BuiltinsPattern(string nvrtcPath)
    {
        string name = Path.GetFileName(nvrtcPath);
        return name.StartsWith("libnvrtc.so.", StringComparison.Ordinal) ? $"libnvrtc-builtins.so.{name["libnvrtc.so.".Length..]}*" : "libnvrtc-builtins.so.*";
    }
}
