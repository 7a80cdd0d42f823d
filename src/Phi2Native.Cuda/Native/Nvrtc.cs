using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace Phi2Native.Cuda.Native;

/// <summary>nvrtcResult, the status every NVRTC call returns (nvrtc.h).</summary>
internal enum NvrtcResult
{
    Success = 0,
    ErrorOutOfMemory = 1,
    ErrorProgramCreationFailure = 2,
    ErrorInvalidInput = 3,
    ErrorInvalidProgram = 4,
    ErrorInvalidOption = 5,
    ErrorCompilation = 6,
    ErrorBuiltinOperationFailure = 7,
    ErrorNoNameExpressionsAfterCompilation = 8,
    ErrorNoLoweredNamesBeforeCompilation = 9,
    ErrorNameExpressionNotValid = 10,
    ErrorInternalError = 11,
    ErrorTimeFileWriteFailed = 12,
}

/// <summary>
/// NVRTC (libnvrtc), the run-time CUDA C++ compiler, bound with <c>LibraryImport</c>. An nvrtcProgram is
/// an <see cref="nint"/>. The small helpers at the end marshal option arrays and read the log, cubin and
/// PTX, so the kernel cache above works with .NET strings and byte arrays.
/// </summary>
internal static unsafe partial class Nvrtc
{
    /// <summary>The logical library name the resolver maps to <c>libnvrtc.so.13</c> or <c>.12</c>.</summary>
    internal const string Library = NativeLibraryResolver.Nvrtc;

    // The resolver must be in place (and the builtins library preloaded) before NVRTC binds.
    static Nvrtc() => NativeLibraryResolver.EnsureRegistered();

    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcVersion(out int major, out int minor);
    [LibraryImport(Library)] internal static partial nint nvrtcGetErrorString(NvrtcResult result);

    /// <summary>
    /// Creates a program from <paramref name="source"/>; <paramref name="name"/> appears in the log.
    /// Headers are passed as NUL-terminated UTF-8 string arrays (may be null with a zero count): the kernel cache
    /// passes kernels/*.cuh here under their file names, so <c>#include "common.cuh"</c> resolves without an include path.
    /// </summary>
    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial NvrtcResult nvrtcCreateProgram(out nint program, string source, string name,
        int numHeaders, byte** headers, byte** includeNames);

    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcCompileProgram(nint program, int numOptions, byte** options);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcGetProgramLogSize(nint program, out nuint size);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcGetProgramLog(nint program, byte* log);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcGetCUBINSize(nint program, out nuint size);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcGetCUBIN(nint program, byte* cubin);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcGetPTXSize(nint program, out nuint size);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcGetPTX(nint program, byte* ptx);
    [LibraryImport(Library)] internal static partial NvrtcResult nvrtcDestroyProgram(ref nint program);

    /// <summary>Throws <see cref="CudaException"/> unless <paramref name="result"/> is success.</summary>
    internal static void Check(NvrtcResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != NvrtcResult.Success) throw Error(result, call);
    }

    /// <summary>Builds the exception for a failed call; NVRTC's string is both the name and the text.</summary>
    internal static CudaException Error(NvrtcResult result, string call)
    {
        var (name, text) = Describe(result);
        return new CudaException(CudaException.NvrtcLibrary, CudaException.CallName(call), (int)result, name, text);
    }

    /// <summary>
    /// NVRTC's string for <paramref name="result"/> ("NVRTC_ERROR_COMPILATION"); it serves as the name,
    /// and the text explains it. Falls back to the numeric value when NVRTC is not loaded.
    /// </summary>
    internal static (string Name, string Text) Describe(NvrtcResult result)
    {
        string? name = null;
        try { name = Marshal.PtrToStringUTF8(nvrtcGetErrorString(result)); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        string text = result switch
        {
            NvrtcResult.ErrorCompilation => "the source did not compile; see the program log",
            NvrtcResult.ErrorInvalidOption => "an option was not accepted",
            NvrtcResult.ErrorBuiltinOperationFailure => "a builtin failed (is libnvrtc-builtins next to libnvrtc?)",
            _ => name is null ? "no description (nvrtcGetErrorString unavailable)" : "see the NVRTC documentation",
        };
        return (name ?? CudaException.Fallback("nvrtcResult", (int)result, typeof(NvrtcResult)), text);
    }

    /// <summary>Compiles <paramref name="program"/> with <paramref name="options"/> (UTF-8, marshalled here) and returns the raw status, so the caller can fetch the log before throwing.</summary>
    internal static NvrtcResult Compile(nint program, IReadOnlyList<string> options)
    {
        var handles = new nint[options.Count];
        try
        {
            for (int i = 0; i < handles.Length; i++) handles[i] = Marshal.StringToCoTaskMemUTF8(options[i]);
            fixed (nint* p = handles) return nvrtcCompileProgram(program, handles.Length, (byte**)p);
        }
        finally
        {
            foreach (nint h in handles) Marshal.FreeCoTaskMem(h);
        }
    }

    /// <summary>The program's compile log (warnings and errors), empty when there is none.</summary>
    internal static string GetLog(nint program)
    {
        Check(nvrtcGetProgramLogSize(program, out nuint size));
        if (size <= 1) return "";
        var buffer = new byte[size];
        fixed (byte* p = buffer) Check(nvrtcGetProgramLog(program, p));
        return Encoding.UTF8.GetString(buffer, 0, buffer.Length - 1); // drop the terminating NUL
    }

    /// <summary>The compiled cubin; valid only after compiling for a real architecture (<c>sm_XY</c>).</summary>
    internal static byte[] GetCubin(nint program)
    {
        Check(nvrtcGetCUBINSize(program, out nuint size));
        var buffer = new byte[size];
        fixed (byte* p = buffer) Check(nvrtcGetCUBIN(program, p));
        return buffer;
    }

    /// <summary>The generated PTX, NUL terminator included, so it can be handed to cuModuleLoadData as is.</summary>
    internal static byte[] GetPtx(nint program)
    {
        Check(nvrtcGetPTXSize(program, out nuint size));
        var buffer = new byte[size];
        fixed (byte* p = buffer) Check(nvrtcGetPTX(program, p));
        return buffer;
    }
}
