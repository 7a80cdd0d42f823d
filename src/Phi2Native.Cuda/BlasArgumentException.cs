namespace Phi2Native.Cuda;

/// <summary>
/// An <see cref="IBlas"/> call was refused before it ran, where cuBLAS would return CUBLAS_STATUS_INVALID_VALUE or
/// CUBLAS_STATUS_NOT_SUPPORTED: a negative size, a leading dimension too small, an unsupported type combination, an
/// epilogue missing its pointers. The message names the call and the argument, e.g.
/// <c>GemmEx: lda = 3 is less than max(1, rows of A as stored) = 5 (transposeA NoTranspose, m 5, k 4)</c>.
/// </summary>
public sealed class BlasArgumentException : EngineFaultException
{
    /// <summary>The <see cref="IBlas"/> member that refused the call, e.g. <c>GemmEx</c>.</summary>
    public string Call { get; }

    /// <summary>The argument that is wrong, spelled as in <see cref="IBlas"/>, e.g. <c>lda</c> or <c>Bias</c>.</summary>
    public string Argument { get; }

    /// <summary>Creates the exception; the message reads <c>Call: message</c>.</summary>
    public BlasArgumentException(string call, string argument, string message)
        : base($"{call}: {message}")
    {
        Call = call;
        Argument = argument;
    }
}
