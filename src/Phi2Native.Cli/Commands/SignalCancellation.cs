using System.Runtime.InteropServices;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// SIGINT (Ctrl-C) and SIGTERM (kill, timeout, docker stop, a batch scheduler's preemption) mapped to a cancellation
/// token for as long as a command runs: the first one cancels the token (the training run finishes its step and writes
/// a checkpoint) instead of ending the process; a second one ends it at once, as the signal normally would. This is
/// all the command line does about signals; the library never registers any (a host owns its signals).
/// </summary>
internal sealed class SignalCancellation : IDisposable
{
    private readonly CancellationTokenSource _source = new();
    private readonly PosixSignalRegistration[] _registrations;
    private readonly TextWriter _error;
    private int _signal;

    public SignalCancellation(TextWriter error)
    {
        _error = error;
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
    }

    /// <summary>Cancelled by the first SIGINT or SIGTERM.</summary>
    public CancellationToken Token => _source.Token;

    /// <summary>The signal that cancelled <see cref="Token"/>, or null.</summary>
    public PosixSignal? Signal => Volatile.Read(ref _signal) switch
    {
        1 => PosixSignal.SIGINT,
        2 => PosixSignal.SIGTERM,
        _ => null,
    };

    /// <summary>The exit code of a command stopped by <see cref="Signal"/>: 130 for SIGINT, 143 for SIGTERM.</summary>
    public int ExitCode => Signal == PosixSignal.SIGTERM ? ExitCodes.Terminated : ExitCodes.Interrupted;

    /// <summary>"SIGINT" or "SIGTERM".</summary>
    public string SignalName => Signal == PosixSignal.SIGTERM ? "SIGTERM" : "SIGINT";

    private void Handle(PosixSignalContext context)
    {
        int signal = context.Signal == PosixSignal.SIGTERM ? 2 : 1;
        if (Interlocked.CompareExchange(ref _signal, signal, 0) != 0) return;   // a second signal: the default action ends the process
        context.Cancel = true;
        _error.WriteLine($"{(signal == 2 ? "SIGTERM" : "SIGINT")}: finishing the step and writing a checkpoint (send it again to stop at once, without one)...");
        try
        {
            _source.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The command has ended between the signal and this handler: nothing is left to stop.
        }
    }

    /// <summary>Stops mapping the signals (they end the process again) and frees the token.</summary>
    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
        _source.Dispose();
    }
}
