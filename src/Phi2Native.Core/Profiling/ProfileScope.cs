namespace Phi2Native.Profiling;

/// <summary>
/// The ambient attribution of device work: the op (LayerNorm, Linear, ...), the module (<c>model.layers.3.mlp.fc1</c>)
/// and the phase a launch serves, kept per thread. The model's modules, the ops, the gradient tape and the trainer open
/// scopes; the device seam reads them when it records. Opening a scope while no <see cref="ProfileRecorder"/> is
/// recording on the thread costs a thread-static read and nothing else (no allocation), so the scopes stay in the
/// code when profiling is off.
/// </summary>
/// <remarks>Dispose restores what was open before, so scopes nest (a module's op inside the module).</remarks>
public readonly struct ProfileScope : IDisposable
{
    [ThreadStatic] private static string? t_op;
    [ThreadStatic] private static string? t_module;
    [ThreadStatic] private static ProfilePhase t_phase;

    private enum Kind : byte { None, Op, Module, Phase }

    private readonly Kind _kind;
    private readonly string? _previous;
    private readonly ProfilePhase _previousPhase;
    private readonly long _hostStart;   // an op the CPU backend computes: when it began (0: not measured here)

    private ProfileScope(Kind kind, string? previous, ProfilePhase previousPhase, long hostStart = 0) =>
        (_kind, _previous, _previousPhase, _hostStart) = (kind, previous, previousPhase, hostStart);

    /// <summary>The op open on this thread, or null.</summary>
    public static string? CurrentOp => t_op;

    /// <summary>The module open on this thread, or null.</summary>
    public static string? CurrentModule => t_module;

    /// <summary>The phase open on this thread.</summary>
    public static ProfilePhase CurrentPhase => t_phase;

    /// <summary>Attributes what follows, until disposed, to op <paramref name="name"/> (a no-op while nothing records).</summary>
    public static ProfileScope Op(string name)
    {
        if (ProfileRecorder.Current is null) return default;
        var scope = new ProfileScope(Kind.Op, t_op, default);
        t_op = name;
        return scope;
    }

    /// <summary>
    /// Attributes what follows, until disposed, to op <paramref name="name"/> computed on <paramref name="backend"/>; on
    /// the CPU backend the outermost op is also recorded, with its host-measured time, as a <see cref="ProfileEventKind.CpuOp"/>
    /// (a GPU's ops are recorded launch by launch at the device seam instead). A no-op while nothing records.
    /// </summary>
    public static ProfileScope Op(string name, Tensors.IBackend backend)
    {
        if (ProfileRecorder.Current is null) return default;
        bool measure = t_op is null && backend.Device.Kind == Tensors.DeviceKind.Cpu;
        var scope = new ProfileScope(Kind.Op, t_op, default, measure ? System.Diagnostics.Stopwatch.GetTimestamp() : 0);
        t_op = name;
        return scope;
    }

    /// <summary>As <see cref="Op(string, Tensors.IBackend)"/> for op <paramref name="name"/>'s backward ("{name}Backward"; the name is made only while recording).</summary>
    public static ProfileScope BackwardOp(string name, Tensors.IBackend backend) =>
        ProfileRecorder.Current is null ? default : Op(name + "Backward", backend);

    /// <summary>Attributes what follows, until disposed, to module <paramref name="name"/> (a no-op while nothing records).</summary>
    public static ProfileScope Module(string? name)
    {
        if (ProfileRecorder.Current is null || name is null) return default;
        var scope = new ProfileScope(Kind.Module, t_module, default);
        t_module = name;
        return scope;
    }

    /// <summary>Attributes what follows, until disposed, to <paramref name="phase"/> (a no-op while nothing records).</summary>
    public static ProfileScope Phase(ProfilePhase phase)
    {
        if (ProfileRecorder.Current is null) return default;
        var scope = new ProfileScope(Kind.Phase, null, t_phase);
        t_phase = phase;
        return scope;
    }

    /// <summary>Restores the attribution open before this scope.</summary>
    public void Dispose()
    {
        switch (_kind)
        {
            case Kind.Op:
                if (_hostStart != 0 && t_op is { } name)
                    ProfileRecorder.Current?.CpuOp(name, "", KernelCost.Undeclared, System.Diagnostics.Stopwatch.GetElapsedTime(_hostStart).TotalMilliseconds);
                t_op = _previous;
                break;
            case Kind.Module: t_module = _previous; break;
            case Kind.Phase: t_phase = _previousPhase; break;
        }
    }

    // A recorder that stops clears what its scopes left open (an exception between open and dispose).
    internal static void Clear()
    {
        t_op = null;
        t_module = null;
        t_phase = ProfilePhase.None;
    }
}
