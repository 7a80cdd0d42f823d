namespace Phi2Native;

/// <summary>
/// A fault of the engine or of the machine under it, not of the caller's input: a CUDA call that failed, a kernel the
/// emulator caught reading or writing out of bounds, a matrix product refused for its arguments. Nothing a user
/// changes in their files or options fixes it; the command line exits with code 1 and asks for a report.
/// </summary>
/// <remarks>
/// It derives from <see cref="Phi2Exception"/> so that a host catching that one type still catches everything the
/// engine raises; catch this type first to tell "report this" from "fix your input".
/// </remarks>
public abstract class EngineFaultException : Phi2Exception
{
    /// <summary>Creates the exception with a message naming the call that failed.</summary>
    protected EngineFaultException(string message, Exception? inner = null) : base(message, inner) { }
}
