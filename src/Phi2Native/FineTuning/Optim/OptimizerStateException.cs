namespace Phi2Native.FineTuning.Optim;

/// <summary>
/// Saved optimizer state does not fit the parameters it is loaded for: entries missing, mis-shaped, of the wrong
/// type, or left over. The message lists every problem, each naming its entry.
/// </summary>
public sealed class OptimizerStateException : Phi2Exception
{
    /// <summary>Creates the exception.</summary>
    public OptimizerStateException(string message, Exception? inner = null) : base(message, inner) { }
}
