namespace Phi2Native.Cuda.Native;

/// <summary>
/// A CUDA driver, NVRTC, cuBLAS or cuBLASLt call failed. The message names the library, the call, the
/// error's name, its numeric code and the library's text for it, for example
/// <c>CUDA driver call cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory</c>.
/// </summary>
public sealed class CudaException : EngineFaultException
{
    internal const string DriverLibrary = "CUDA driver";
    internal const string NvrtcLibrary = "NVRTC";
    internal const string CublasLibrary = "cuBLAS";
    internal const string CublasLtLibrary = "cuBLASLt";

    /// <summary>The library that reported the error: "CUDA driver", "NVRTC", "cuBLAS" or "cuBLASLt".</summary>
    public string Library { get; }

    /// <summary>The function that failed, for example <c>cuLaunchKernel</c>.</summary>
    public string Call { get; }

    /// <summary>The numeric status (CUresult, nvrtcResult or cublasStatus_t).</summary>
    public int Code { get; }

    /// <summary>The status's name as the library spells it (<c>CUDA_ERROR_OUT_OF_MEMORY</c>), or a numeric stand-in when the library cannot say.</summary>
    public string ErrorName { get; }

    /// <summary>The library's description of the status.</summary>
    public string ErrorText { get; }

    /// <summary>Creates the exception; <paramref name="detail"/> (for example NVRTC's compile log) is appended on its own lines.</summary>
    internal CudaException(string library, string call, int code, string errorName, string errorText, string? detail = null)
        : base(Format(library, call, code, errorName, errorText) + (string.IsNullOrEmpty(detail) ? "" : "\n" + detail))
    {
        Library = library;
        Call = call;
        Code = code;
        ErrorName = errorName;
        ErrorText = errorText;
    }

    /// <summary>The one-line message: library, call, name, code and text.</summary>
    internal static string Format(string library, string call, int code, string errorName, string errorText) =>
        $"{library} call {call} failed: {errorName} ({code}): {errorText}";

    /// <summary>
    /// The function name inside a call expression captured by <c>CallerArgumentExpression</c>:
    /// <c>CudaDriver.cuMemAlloc(out p, n)</c> gives <c>cuMemAlloc</c>. Anything else is returned trimmed.
    /// </summary>
    internal static string CallName(string expression)
    {
        string e = expression.Trim();
        int paren = e.IndexOf('(');
        if (paren <= 0) return e.Length == 0 ? "(unknown call)" : e;
        string head = e[..paren].TrimEnd();
        int dot = head.LastIndexOf('.');
        return dot >= 0 ? head[(dot + 1)..] : head;
    }

    /// <summary>
    /// The name used when the library cannot name a status (not loaded, or an unknown code):
    /// the C type and the number, with our enum member where we know it, e.g. <c>CUresult 2 (ErrorOutOfMemory)</c>.
    /// </summary>
    internal static string Fallback(string cTypeName, int code, Type enumType)
    {
        string? member = Enum.GetName(enumType, Enum.ToObject(enumType, code));
        return member is null ? $"{cTypeName} {code}" : $"{cTypeName} {code} ({member})";
    }
}
