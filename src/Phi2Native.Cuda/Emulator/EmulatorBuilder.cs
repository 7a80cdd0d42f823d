using System.ComponentModel;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Emulator;

/// <summary>
/// Builds a kernel emulator library (libphi2emu.so) at run time from a folder of edited kernel sources
/// (<see cref="KernelSourceOverride"/>), so an edited kernel can be tried on the emulated device without rebuilding:
/// the folder's files and the embedded others go into a source tree laid out as the repository's <c>kernels/</c>, with
/// the emulator's own sources (kernels/emu, embedded as <c>Phi2Native.KernelEmulator.*</c>), and g++ compiles it with
/// the flags of kernels/emu/cxxflags, the response file the MSBuild target uses too.
/// </summary>
/// <remarks>
/// Libraries are cached by a hash of every source, the flags and the compiler's version, under
/// <c>{kernel cache folder}/emulator/{key}/libphi2emu.so</c>: built in a temporary folder beside it and renamed into place,
/// so a reader sees a whole library or none, and concurrent builders both succeed. Within a process each key is built
/// or loaded once. With the kernel cache off, the library is built in a temporary folder that is deleted once loaded.
/// A new kernel file (one the embedded set lacks) is refused: the emulator's table of entry points
/// (kernels/emu/kernels.cpp) is written by hand and cannot list it.
/// </remarks>
internal sealed partial class EmulatorBuilder
{
    /// <summary>The prefix of the emulator sources' resource names (set in Phi2Native.csproj).</summary>
    internal const string ResourcePrefix = "Phi2Native.KernelEmulator.";

    /// <summary>The g++ response file with the emulator's flags, in kernels/emu.</summary>
    internal const string FlagsFile = "cxxflags";

    /// <summary>Bumped when the tree layout or the build changes in a way the key's other fields do not show.</summary>
    internal const string KeyFormat = "phi2native-emulator-1";

    /// <summary>The one every emulated device of the process builds through.</summary>
    internal static EmulatorBuilder Shared { get; } = new("g++");

    private static readonly Lazy<IReadOnlyDictionary<string, string>> EmulatorSourcesOnce = new(LoadEmulatorSources, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly string _compiler;
    private readonly object _gate = new();
    private readonly Dictionary<string, EmulatorLibrary> _loaded = new(StringComparer.Ordinal);
    private string? _compilerVersion;

    /// <summary>A builder that runs <paramref name="compiler"/> (a g++ on PATH, or a path to one).</summary>
    internal EmulatorBuilder(string compiler) => _compiler = compiler;

    /// <summary>
    /// The emulator library for <paramref name="sources"/>: already loaded, read from the cache in
    /// <paramref name="cache"/>'s folder, or built now; the sources' notice sink hears which files came from the folder
    /// and where the library came from.
    /// </summary>
    /// <exception cref="Phi2Exception">The folder adds a kernel file, g++ cannot be run, or the built library does not load.</exception>
    /// <exception cref="KernelCompileException">g++ failed; the message names the file and line of the first error.</exception>
    internal EmulatorLibrary Build(KernelSourceOverride sources, KernelCacheOptions cache)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentNullException.ThrowIfNull(cache);
        var added = sources.Files.Where(f => f.Change == KernelSourceChange.Added && f.Name.EndsWith(".cu", StringComparison.Ordinal)).ToList();
        if (added.Count > 0)
            throw new Phi2Exception(
                $"{sources.Options.Setting}={sources.Directory}: {string.Join(", ", added.Select(f => f.Name))} " +
                $"{(added.Count == 1 ? "is" : "are")} not among the embedded kernel files, and the emulated device cannot run a new one: " +
                "the emulator's table of entry points (kernels/emu/kernels.cpp) is written by hand. Add the file to kernels/ with its " +
                "table rows and rebuild, or try it on a GPU, where NVRTC compiles new files too");

        var tree = SourceTree(sources.Catalog);
        lock (_gate)
        {
            string key = Key(tree, CompilerVersion(sources));
            string how;
            if (_loaded.TryGetValue(key, out var library)) how = $"the emulator built from them is loaded already ({library.Path})";
            else
            {
                (library, how) = LoadOrBuild(key, tree, sources, cache);
                _loaded[key] = library;
            }
            sources.Options.Tell($"{sources.Describe()}; {how}");
            foreach (string missing in MissingTableRows(sources.Catalog, library))
                sources.Options.Tell($"warning: kernel {missing} ({sources.Catalog.FileOf(missing)}) has no row in the emulator's table " +
                                     "(kernels/emu/kernels.cpp, written by hand): launching it on the emulated device fails");
            return library;
        }
    }

    /// <summary>
    /// The files g++ compiles, by path relative to the build folder: <c>kernels/{file}</c> for every kernel file and
    /// header of <paramref name="catalog"/>, <c>kernels/emu/{file}</c> for the emulator's own sources.
    /// </summary>
    internal static SortedDictionary<string, string> SourceTree(KernelSourceCatalog catalog)
    {
        var tree = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (string file in catalog.Files) tree[$"kernels/{file}"] = catalog.SourceOf(file);
        foreach (var header in catalog.Headers) tree[$"kernels/{header.Name}"] = header.Text;
        foreach (var (name, text) in EmulatorSourcesOnce.Value) tree[$"kernels/emu/{name}"] = text;
        return tree;
    }

    /// <summary>The cache key (64 hex digits): SHA-256 of every path and text of <paramref name="tree"/>, the compiler's version and the process architecture.</summary>
    internal static string Key(IReadOnlyDictionary<string, string> tree, string compilerVersion)
    {
        var fields = new List<string> { KeyFormat, "compiler", compilerVersion, "architecture", RuntimeInformation.ProcessArchitecture.ToString() };
        foreach (var (path, text) in tree.OrderBy(f => f.Key, StringComparer.Ordinal)) fields.AddRange(["file", path, text]);
        return KernelDiskCache.Hash(fields);
    }

    private (EmulatorLibrary Library, string How) LoadOrBuild(string key, SortedDictionary<string, string> tree, KernelSourceOverride sources, KernelCacheOptions cache)
    {
        string? root = cache.Directory is null ? null : Path.Combine(cache.Directory, "emulator");
        if (root is not null)
        {
            string cached = Path.Combine(root, key, NativeLibraryResolver.EmulatorFileName);
            if (File.Exists(cached) && NativeLibrary.TryLoad(cached, out nint handle))
                return (new EmulatorLibrary(handle, cached), $"the emulator built from them earlier is in the cache: {cached}");
            try
            {
                Directory.CreateDirectory(root);
                // A folder under the key without a loadable library is damaged (say, a disk that filled up): build it again.
                if (Directory.Exists(Path.Combine(root, key))) Directory.Delete(Path.Combine(root, key), recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                cache.Warn($"the emulator cache folder {root} cannot be used ({e.Message}); the emulator is built in a temporary folder");
                root = null;
            }
        }
        string build = root is null
            ? Path.Combine(Path.GetTempPath(), $"phi2native-emulator-{key[..16]}-{Guid.NewGuid():N}")
            : Path.Combine(root, $"{key}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            var clock = Stopwatch.StartNew();
            Compile(build, tree, sources);
            string seconds = $"{clock.Elapsed.TotalSeconds:F1} s";
            if (root is null)
                return (LoadBuilt(Path.Combine(build, NativeLibraryResolver.EmulatorFileName), sources),
                        $"g++ built an emulator from them in {seconds} (not cached: the kernel cache is off)");
            string final = Path.Combine(root, key);
            try
            {
                Directory.Move(build, final);
            }
            catch (IOException) when (File.Exists(Path.Combine(final, NativeLibraryResolver.EmulatorFileName)))
            {
                // Another process renamed its build into place first; both are built from the same sources.
            }
            return (LoadBuilt(Path.Combine(final, NativeLibraryResolver.EmulatorFileName), sources),
                    $"g++ built an emulator from them in {seconds}: {Path.Combine(final, NativeLibraryResolver.EmulatorFileName)}");
        }
        finally
        {
            // What is left of the build folder: all of it after a failure, or after a load from a folder not kept.
            try { if (Directory.Exists(build)) Directory.Delete(build, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* a stale .tmp folder is never read */ }
        }
    }

    private static EmulatorLibrary LoadBuilt(string path, KernelSourceOverride sources)
    {
        try
        {
            return new EmulatorLibrary(NativeLibrary.Load(path), path);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException)
        {
            throw new Phi2Exception($"{sources.Options.Setting}={sources.Directory}: the emulator g++ built does not load: {e.Message}", e);
        }
    }

    // Writes the tree into folder and runs g++ there, so its messages name files by their short relative paths.
    private void Compile(string folder, SortedDictionary<string, string> tree, KernelSourceOverride sources)
    {
        foreach (var (path, text) in tree)
        {
            string full = Path.Combine(folder, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, text, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        }
        var arguments = new List<string> { $"@kernels/emu/{FlagsFile}", "-o", NativeLibraryResolver.EmulatorFileName };
        arguments.AddRange(tree.Keys.Where(p => p.StartsWith("kernels/emu/", StringComparison.Ordinal) && p.EndsWith(".cpp", StringComparison.Ordinal)));
        var (exitCode, output) = Run(arguments, folder, sources);
        if (exitCode == 0) return;
        string log = MapPaths(output, sources.Files);
        string[] flags = tree[$"kernels/emu/{FlagsFile}"].Split((char[])[' ', '\t', '\r', '\n'], StringSplitOptions.RemoveEmptyEntries);
        throw new KernelCompileException("g++", FirstErrorFile(log) ?? NativeLibraryResolver.EmulatorFileName, flags, $"exit code {exitCode}", log);
    }

    private (int ExitCode, string Output) Run(IEnumerable<string> arguments, string? workingDirectory, KernelSourceOverride sources)
    {
        var start = new ProcessStartInfo(_compiler)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? "",
        };
        foreach (string a in arguments) start.ArgumentList.Add(a);
        start.Environment["LC_ALL"] = "C"; // plain ASCII quotes in messages, whatever the user's locale
        try
        {
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync();
            string output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output + error.Result);
        }
        catch (Win32Exception e)
        {
            throw new Phi2Exception($"{sources.Options.Setting}={sources.Directory}: the emulated device builds its kernel emulator from these " +
                                    $"sources with g++, and '{_compiler}' cannot be run ({e.Message}); install g++ (e.g. apt-get install g++)", e);
        }
    }

    // The compiler's version text, asked once per builder: a new compiler must not reuse libraries an old one built.
    private string CompilerVersion(KernelSourceOverride sources)
    {
        lock (_gate)
        {
            if (_compilerVersion is not null) return _compilerVersion;
            var (exitCode, output) = Run(["--version"], null, sources);
            if (exitCode != 0)
                throw new Phi2Exception($"{sources.Options.Setting}={sources.Directory}: '{_compiler} --version' failed (exit code {exitCode}): {output.Trim()}");
            return _compilerVersion = $"{_compiler}: {output.Trim()}";
        }
    }

    /// <summary>
    /// g++'s output with each build-folder path of a file from the kernel source folder replaced by that file's full path
    /// (<c>kernels/emu/../elementwise.cu:21:5</c>, as kernels.cpp includes it, becomes <c>/dir/elementwise.cu:21:5</c>); the
    /// embedded files keep their <c>kernels/...</c> names, as in the repository.
    /// </summary>
    internal static string MapPaths(string output, IReadOnlyList<KernelSourceFile> fromFolder)
    {
        string text = output.Replace("kernels/emu/../", "kernels/", StringComparison.Ordinal);
        foreach (var file in fromFolder)
            text = Regex.Replace(text, $@"(?<![\w./-])kernels/{Regex.Escape(file.Name)}(?![\w.])", file.Path.Replace("$", "$$", StringComparison.Ordinal));
        return text;
    }

    /// <summary>The file of the first <c>file:line: error</c> (or <c>file:line:column: fatal error</c>) in g++'s output, or null.</summary>
    internal static string? FirstErrorFile(string output) =>
        FirstError().Match(output) is { Success: true } m ? m.Groups["file"].Value : null;

    [GeneratedRegex(@"^(?<file>[^\s:][^:\n]*):\d+:(?:\d+:)?\s+(?:fatal\s+)?error:", RegexOptions.Multiline)]
    private static partial Regex FirstError();

    // Entry points the sources define that the built library cannot launch (a new kernel in an edited file).
    private static IEnumerable<string> MissingTableRows(KernelSourceCatalog catalog, EmulatorLibrary library)
    {
        var table = library.KernelNames().ToHashSet(StringComparer.Ordinal);
        return catalog.KernelFiles.Keys.Where(k => !table.Contains(k)).Order(StringComparer.Ordinal);
    }

    private static IReadOnlyDictionary<string, string> LoadEmulatorSources()
    {
        var assembly = typeof(EmulatorBuilder).Assembly;
        var sources = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string resource in assembly.GetManifestResourceNames().Where(r => r.StartsWith(ResourcePrefix, StringComparison.Ordinal)))
        {
            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
            sources[resource[ResourcePrefix.Length..]] = reader.ReadToEnd();
        }
        if (!sources.ContainsKey(FlagsFile) || !sources.Keys.Any(n => n.EndsWith(".cpp", StringComparison.Ordinal)))
            throw new InvalidOperationException($"the kernel emulator's sources are not embedded in {assembly.GetName().Name} (resources {ResourcePrefix}*): the build is broken");
        return sources;
    }
}
