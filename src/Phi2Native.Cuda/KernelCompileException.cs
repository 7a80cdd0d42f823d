namespace Phi2Native.Cuda;

/// <summary>
/// A kernel source did not compile: NVRTC could not compile a kernel file, or g++ could not build the kernel emulator
/// from edited sources. The message names the compiler, the file, the options and carries the compiler's whole log
/// (each error with its file and line), so the fix can start from the message alone.
/// </summary>
public sealed class KernelCompileException : Phi2Exception
{
    /// <summary>
    /// The kernel file, e.g. <c>layernorm.cu</c>, or its full path where it came from a folder of kernel sources
    /// (<see cref="KernelSourceOptions"/>); for g++, the first file its log reports an error in.
    /// </summary>
    public string FileName { get; }

    /// <summary>The compiler: <c>NVRTC</c>, or <c>g++</c> building the kernel emulator.</summary>
    public string Compiler { get; }

    /// <summary>The options the compile was given (architecture first for NVRTC).</summary>
    public IReadOnlyList<string> Options { get; }

    /// <summary>The compiler's log: every error and warning, as the compiler wrote it.</summary>
    public string Log { get; }

    /// <summary>Creates the exception for NVRTC; <paramref name="status"/> is NVRTC's result name, e.g. NVRTC_ERROR_COMPILATION.</summary>
    public KernelCompileException(string fileName, IReadOnlyList<string> options, string status, string log)
        : this("NVRTC", fileName, options, status, log)
    {
    }

    /// <summary>Creates the exception for <paramref name="compiler"/>; <paramref name="status"/> says how it failed.</summary>
    internal KernelCompileException(string compiler, string fileName, IReadOnlyList<string> options, string status, string log)
        : base($"{compiler} could not compile {(fileName.Contains('/') ? fileName : "kernels/" + fileName)} ({status}) with {string.Join(" ", options)}:\n" +
               (string.IsNullOrWhiteSpace(log) ? $"({compiler} wrote no log)" : log.TrimEnd()))
    {
        Compiler = compiler;
        FileName = fileName;
        Options = options;
        Log = log;
    }
}
