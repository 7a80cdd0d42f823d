namespace Phi2Native.Cuda;

/// <summary>
/// NVRTC could not compile a kernel file. The message names the file, the architecture and options, and carries
/// NVRTC's whole log (each error with its line), so the fix can start from the message alone.
/// </summary>
public sealed class KernelCompileException : Phi2Exception
{
    /// <summary>The kernel file, e.g. <c>layernorm.cu</c>.</summary>
    public string FileName { get; }

    /// <summary>The options the compile was given (architecture first).</summary>
    public IReadOnlyList<string> Options { get; }

    /// <summary>NVRTC's program log: every error and warning, as NVRTC wrote it.</summary>
    public string Log { get; }

    /// <summary>Creates the exception; <paramref name="status"/> is NVRTC's result name, e.g. NVRTC_ERROR_COMPILATION.</summary>
    public KernelCompileException(string fileName, IReadOnlyList<string> options, string status, string log)
        : base($"NVRTC could not compile kernels/{fileName} ({status}) with {string.Join(" ", options)}:\n" +
               (string.IsNullOrWhiteSpace(log) ? "(NVRTC wrote no log)" : log.TrimEnd()))
    {
        FileName = fileName;
        Options = options;
        Log = log;
    }
}
