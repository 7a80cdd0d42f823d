namespace Phi2Native.Cuda;

/// <summary>
/// Where the kernels' CUDA C++ comes from: the copies embedded in this assembly, or, file by file, a folder of edited
/// ones (<see cref="Directory"/>), so a kernel can be changed and tried without rebuilding. Every <c>*.cu</c> and
/// <c>*.cuh</c> directly in the folder replaces the embedded file of that name; the others stay embedded. On a GPU,
/// NVRTC compiles them as usual; on the emulated device, g++ builds an emulator library from them at run time. The
/// default (<see cref="FromEnvironment"/>) is <c>$PHI2NATIVE_KERNEL_SOURCES</c>.
/// </summary>
public sealed record KernelSourceOptions
{
    /// <summary>The environment variable naming a folder of kernel sources to use instead of the embedded ones.</summary>
    public const string EnvironmentVariable = "PHI2NATIVE_KERNEL_SOURCES";

    /// <summary>The folder of kernel sources; null uses the embedded kernels only.</summary>
    public string? Directory { get; init; }

    /// <summary>
    /// What names the folder in messages (a missing folder, a bad file): the variable or the host option it was read from,
    /// e.g. <c>PHI2NATIVE_KERNEL_SOURCES</c>.
    /// </summary>
    public string Setting { get; init; } = nameof(KernelSourceOptions) + "." + nameof(Directory);

    /// <summary>
    /// Receives the notice of which files came from <see cref="Directory"/> (and, on the emulated device, the library g++
    /// built from them). Null writes it to standard error.
    /// </summary>
    public Action<string>? Notice { get; init; }

    /// <summary>The embedded kernels only.</summary>
    public static KernelSourceOptions Embedded => new();

    /// <summary>The folder named by <c>PHI2NATIVE_KERNEL_SOURCES</c>, or the embedded kernels when it is unset or blank.</summary>
    /// <param name="environment">Reads a variable; null reads this process's environment (tests pass their own).</param>
    public static KernelSourceOptions FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string? folder = environment(EnvironmentVariable)?.Trim();
        return new KernelSourceOptions { Directory = string.IsNullOrEmpty(folder) ? null : folder, Setting = EnvironmentVariable };
    }

    internal void Tell(string message)
    {
        if (Notice is { } sink) sink(message);
        else Console.Error.WriteLine($"phi2native: {message}");
    }
}
