namespace Phi2Native.Cli.Commands;

/// <summary>The exit codes of every command; README.md's table says the same.</summary>
internal static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Done = 0;

    /// <summary>A fault of the engine (a CUDA error, an emulator bounds fault, a BLAS argument error, any unexpected exception): please report it.</summary>
    public const int EngineFault = 1;

    /// <summary>Bad input or usage: one "error:" line naming the option, file or field.</summary>
    public const int BadInput = 2;

    /// <summary>Training stopped on a loss or gradient that was not finite; the last good checkpoint is kept.</summary>
    public const int NonFinite = 3;

    /// <summary>Stopped by SIGINT (Ctrl-C), after writing a checkpoint: 128 + 2, as shells report it.</summary>
    public const int Interrupted = 130;

    /// <summary>Stopped by SIGTERM (kill, timeout, docker stop, a scheduler's preemption), after writing a checkpoint: 128 + 15.</summary>
    public const int Terminated = 143;
}
