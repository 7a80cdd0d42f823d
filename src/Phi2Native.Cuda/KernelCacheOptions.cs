namespace Phi2Native.Cuda;

/// <summary>
/// Where compiled kernel images are cached on disk, and where the cache's warnings go. The default
/// (<see cref="FromEnvironment"/>) is <c>$PHI2NATIVE_KERNEL_CACHE</c> when set, else
/// <c>$XDG_CACHE_HOME/phi2native/kernels</c>, else <c>~/.cache/phi2native/kernels</c>; setting the variable to
/// <c>off</c> (or <c>0</c>, <c>none</c>, <c>false</c>) disables the disk cache.
/// </summary>
public sealed record KernelCacheOptions
{
    /// <summary>The environment variable that overrides the cache folder or, set to <c>off</c>, disables it.</summary>
    public const string EnvironmentVariable = "PHI2NATIVE_KERNEL_CACHE";

    /// <summary>The folder of the disk cache; null disables it (every process then compiles each file once).</summary>
    public string? Directory { get; init; }

    /// <summary>
    /// Receives the cache's warnings (a folder that cannot be used, an entry that cannot be written), which degrade
    /// to compiling without the disk cache instead of failing. Null writes them to standard error.
    /// </summary>
    public Action<string>? Warning { get; init; }

    /// <summary>No disk cache.</summary>
    public static KernelCacheOptions Disabled => new() { Directory = null };

    /// <summary>The cache in <paramref name="directory"/>.</summary>
    public static KernelCacheOptions InDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        return new KernelCacheOptions { Directory = directory };
    }

    /// <summary>The default, read from the environment (see the class summary).</summary>
    /// <param name="environment">Reads a variable; null reads this process's environment (tests pass their own).</param>
    public static KernelCacheOptions FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string? setting = environment(EnvironmentVariable)?.Trim();
        if (!string.IsNullOrEmpty(setting))
        {
            return setting.ToLowerInvariant() is "off" or "0" or "none" or "false" or "disabled"
                ? Disabled
                : new KernelCacheOptions { Directory = setting };
        }
        string? xdg = environment("XDG_CACHE_HOME")?.Trim();
        // The XDG spec: a relative XDG_CACHE_HOME is invalid and must be ignored.
        string? root = !string.IsNullOrEmpty(xdg) && Path.IsPathRooted(xdg)
            ? xdg
            : environment("HOME") is { Length: > 0 } home ? Path.Combine(home, ".cache")
            : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } profile ? Path.Combine(profile, ".cache")
            : null;
        return root is null ? Disabled : new KernelCacheOptions { Directory = Path.Combine(root, "phi2native", "kernels") };
    }

    internal void Warn(string message)
    {
        if (Warning is { } sink) sink(message);
        else Console.Error.WriteLine($"phi2native: warning: {message}");
    }
}
