namespace Phi2Native.Cuda.Native;

/// <summary>The environment variables that add folders to the search: <c>CUDA_PATH</c>, <c>CUDA_HOME</c>, <c>VIRTUAL_ENV</c>.</summary>
internal sealed record SearchVariables(string? CudaPath, string? CudaHome, string? VirtualEnv);

/// <summary>
/// One place cuBLAS and cuBLASLt may both come from: <paramref name="Directory"/> holds both files, or is null for
/// "ask the loader for <paramref name="CublasLt"/>, then take <paramref name="Cublas"/> from the folder it came from".
/// </summary>
internal sealed record BlasPairCandidate(string? Directory, string Cublas, string CublasLt);

// The search order: which folders, in which order, and which file names - a pure function of the environment (the
// variables and a directory lister), so tests pin it with a fake tree and no CUDA.
internal static partial class NativeLibraryResolver
{
    /// <summary>The wheel folders under <c>site-packages/nvidia</c> that hold CUDA user-space libraries, probed in this order.</summary>
    internal static readonly string[] WheelLibraryFolders = ["cu13", "cu12", "cuda_nvrtc", "cublas"];

    /// <summary>
    /// The folders probed after the loader's own paths, in order, duplicates dropped:
    /// <list type="number">
    /// <item><c>$CUDA_PATH/lib64</c>, then <c>$CUDA_HOME/lib64</c> (a toolkit someone pointed at);</item>
    /// <item><c>$VIRTUAL_ENV/lib/python3*/site-packages/nvidia/{cu13,cu12,cuda_nvrtc,cublas}/lib</c> (NVIDIA's pip wheels
    /// in the active virtual environment; CUDA 13 wheels install into <c>cu13</c>, CUDA 12 ones into one folder per library);</item>
    /// <item><c>/usr/local/cuda/lib64</c> (the toolkit the administrator made default), then <c>/usr/local/cuda-X.Y/lib64</c>, newest first;</item>
    /// <item><c>/opt/*/.venv/lib/python3*/site-packages/nvidia/{...}/lib</c> (virtual environments an image ships, e.g. /opt/torch/.venv);</item>
    /// <item><c>/usr/local/nvidia/lib64</c> (where container runtimes mount the driver).</item>
    /// </list>
    /// Python versions go newest first, <c>/opt</c> entries in ordinal order, and a wheel folder is listed only where
    /// it exists. <paramref name="subdirectories"/> gives the names of a folder's subfolders (none for a missing one).
    /// </summary>
    internal static IReadOnlyList<string> SearchDirectories(SearchVariables variables, Func<string, IEnumerable<string>> subdirectories)
    {
        var result = new List<string>();
        void Add(string dir)
        {
            string normalized = dir.TrimEnd('/');
            if (normalized.Length > 0 && !result.Contains(normalized)) result.Add(normalized);
        }
        foreach (string? root in new[] { variables.CudaPath, variables.CudaHome })
            if (!string.IsNullOrWhiteSpace(root)) Add(Path.Combine(root.Trim(), "lib64"));
        if (!string.IsNullOrWhiteSpace(variables.VirtualEnv))
            foreach (string dir in WheelDirectories(variables.VirtualEnv.Trim().TrimEnd('/'), subdirectories)) Add(dir);

        var versioned = new List<(Version Version, string Name)>();
        bool hasPlain = false;
        foreach (string entry in subdirectories("/usr/local"))
        {
            if (entry == "cuda") hasPlain = true;
            else if (entry.StartsWith("cuda-", StringComparison.Ordinal) && TryParseVersion(entry[5..], out var v)) versioned.Add((v, entry));
        }
        if (hasPlain) Add("/usr/local/cuda/lib64");
        foreach (var (_, name) in versioned.OrderByDescending(x => x.Version)) Add($"/usr/local/{name}/lib64");

        foreach (string entry in subdirectories("/opt").Order(StringComparer.Ordinal))
            foreach (string dir in WheelDirectories($"/opt/{entry}/.venv", subdirectories)) Add(dir);
        Add("/usr/local/nvidia/lib64");
        return result;
    }

    // The wheel library folders of one virtual environment: lib/python3*/site-packages/nvidia/{cu13,...}/lib.
    private static IEnumerable<string> WheelDirectories(string venv, Func<string, IEnumerable<string>> subdirectories)
    {
        var pythons = subdirectories($"{venv}/lib")
            .Where(p => p.StartsWith("python3", StringComparison.Ordinal))
            .Select(p => (Name: p, Version: TryParseVersion(p["python".Length..], out var v) ? v : new Version(0, 0)))
            .OrderByDescending(p => p.Version).ThenBy(p => p.Name, StringComparer.Ordinal);
        foreach (var (python, _) in pythons)
        {
            string nvidia = $"{venv}/lib/{python}/site-packages/nvidia";
            var present = subdirectories(nvidia).ToHashSet(StringComparer.Ordinal);
            foreach (string folder in WheelLibraryFolders)
                if (present.Contains(folder)) yield return $"{nvidia}/{folder}/lib";
        }
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
        var result = new List<string>();
        foreach (string soname in SonamesOf(logicalName))
        {
            result.Add(soname);
            foreach (string dir in directories) result.Add($"{dir}/{soname}");
        }
        return result;
    }

    /// <summary>
    /// Where cuBLAS and cuBLASLt may be taken from, as a pair, in order: for each major version (13, 12, then the
    /// unversioned development names), first the loader (<see cref="BlasPairCandidate.Directory"/> null), then each of
    /// <paramref name="directories"/> whose files (<paramref name="listFiles"/>) include both names. A folder holding
    /// only one of the two is used for neither: it is reported in <c>Lone</c>, for the failure message.
    /// </summary>
    internal static (IReadOnlyList<BlasPairCandidate> Pairs, IReadOnlyList<string> Lone) BlasPairCandidates(
        IReadOnlyList<string> directories, Func<string, IEnumerable<string>> listFiles)
    {
        string[] cublas = Sonames[Cublas], cublasLt = Sonames[CublasLt];
        var files = directories.ToDictionary(d => d, d => listFiles(d).ToHashSet(StringComparer.Ordinal));
        var pairs = new List<BlasPairCandidate>();
        var lone = new List<string>();
        for (int i = 0; i < cublas.Length; i++)
        {
            pairs.Add(new BlasPairCandidate(null, cublas[i], cublasLt[i]));
            foreach (string dir in directories)
            {
                bool hasBlas = files[dir].Contains(cublas[i]), hasLt = files[dir].Contains(cublasLt[i]);
                if (hasBlas && hasLt) pairs.Add(new BlasPairCandidate(dir, cublas[i], cublasLt[i]));
                else if (hasBlas || hasLt)
                    lone.Add($"{dir} has {(hasBlas ? cublas[i] : cublasLt[i])} but no {(hasBlas ? cublasLt[i] : cublas[i])}");
            }
        }
        return (pairs, lone);
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

    /// <summary>"the loader's paths (LD_LIBRARY_PATH=..., the ld.so cache), /usr/local/cuda/lib64, ...": every place looked.</summary>
    internal static string PlacesLooked(ProbeEnvironment env) =>
        string.Join(", ", env.Directories.Prepend(
            $"{LoaderPaths} (LD_LIBRARY_PATH={(string.IsNullOrEmpty(env.LdLibraryPath) ? "(unset)" : env.LdLibraryPath)}, the ld.so cache)"));

    /// <summary>"libcuda.so.1 is not in the loader's paths (LD_LIBRARY_PATH=..., the ld.so cache), /usr/local/cuda/lib64, ..."</summary>
    internal static string NotFoundMessage(string logicalName, ProbeEnvironment env)
    {
        string[] names = SonamesOf(logicalName);
        string also = names.Length > 1 ? $" (also tried {string.Join(", ", names.Skip(1))})" : "";
        return $"{names[0]} is not in {PlacesLooked(env)}{also}";
    }

    /// <summary>
    /// Why no cuBLAS pair loaded: no one place holds both of a major version's files, naming every place looked, the
    /// folders that hold only one of them, and the pairs that were there but did not load.
    /// </summary>
    internal static string BlasNotFoundMessage(ProbeEnvironment env, IReadOnlyList<string> notes)
    {
        string[] cublas = Sonames[Cublas], cublasLt = Sonames[CublasLt];
        string message = $"no one folder holds both {cublas[0]} and {cublasLt[0]} " +
                         $"(nor {string.Join(", nor ", cublas.Skip(1).Zip(cublasLt.Skip(1), (b, lt) => $"{b} and {lt}"))}) " +
                         $"in {PlacesLooked(env)}; cuBLAS and cuBLASLt are taken from one folder, since a mismatched pair fails on missing symbols";
        return notes.Count == 0 ? message : $"{message}; {string.Join("; ", notes)}";
    }

    private static string[] SonamesOf(string logicalName) => Sonames.TryGetValue(logicalName, out var names)
        ? names
        : throw new ArgumentException($"unknown CUDA library '{logicalName}'; known: {string.Join(", ", Sonames.Keys)}", nameof(logicalName));
}

/// <summary>
/// What the resolver reads from the machine: LD_LIBRARY_PATH (for messages only: the loader reads it itself), the
/// folders to probe, and a file lister. Tests build one by hand.
/// </summary>
internal sealed record ProbeEnvironment(string? LdLibraryPath, IReadOnlyList<string> Directories, Func<string, IEnumerable<string>> ListFiles)
{
    /// <summary>This process's environment and file system.</summary>
    internal static ProbeEnvironment Current()
    {
        var variables = new SearchVariables(Environment.GetEnvironmentVariable("CUDA_PATH"), Environment.GetEnvironmentVariable("CUDA_HOME"),
            Environment.GetEnvironmentVariable("VIRTUAL_ENV"));
        var dirs = NativeLibraryResolver.SearchDirectories(variables, d => SafeList(d, directories: true));
        return new ProbeEnvironment(Environment.GetEnvironmentVariable("LD_LIBRARY_PATH"), dirs, d => SafeList(d, directories: false));
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
