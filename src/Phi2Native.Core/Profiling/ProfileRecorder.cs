using System.Diagnostics;

namespace Phi2Native.Profiling;

/// <summary>
/// Records what the engine does on the thread that started it: every kernel launch and GEMM through the device seam,
/// host synchronisations with their call sites, copies, driver allocations and the CPU backend's ops, each with the
/// op, module and phase open (<see cref="ProfileScope"/>) and its declared <see cref="KernelCost"/>. Nothing is recorded
/// while no recorder is open: the seam's only cost is a thread-static read and a null check.
/// </summary>
/// <remarks>
/// One recorder per thread at a time; the engine's work for a step runs on the thread that drives it, so a host
/// starts one around the step it wants to see (<c>using var recorder = ProfileRecorder.Start();</c>). Dispose stops it
/// and resolves the measured times (GPU event pairs) that were still pending.
/// </remarks>
public sealed class ProfileRecorder : IDisposable
{
    [ThreadStatic] private static ProfileRecorder? t_current;

    private readonly List<ProfileEvent> _events = [];
    private readonly Dictionary<ProfilePhase, long> _peakBytesInUse = [];
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly ProfileRecorder? _previous;
    private bool _queuedSinceWait, _stopped, _inGraph;

    private ProfileRecorder(bool countTraffic)
    {
        CountTraffic = countTraffic;
        _previous = t_current;
        t_current = this;
    }

    /// <summary>The recorder open on this thread, or null (profiling off).</summary>
    public static ProfileRecorder? Current => t_current;

    /// <summary>
    /// Starts recording on this thread. With <paramref name="countTraffic"/>, the emulated device also counts the bytes
    /// each launch really reads and writes (<see cref="ProfileEvent.CountedBytes"/>; slow: a call per memory access).
    /// </summary>
    public static ProfileRecorder Start(bool countTraffic = false) => new(countTraffic);

    /// <summary>Records <paramref name="work"/> alone on this thread and returns its events (the recorder stopped, so measured times are in).</summary>
    public static IReadOnlyList<ProfileEvent> Record(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var recorder = Start();
        try
        {
            work();
        }
        finally
        {
            recorder.Dispose();
        }
        return recorder.Events;
    }

    /// <summary>Whether the emulated device counts each launch's memory traffic.</summary>
    public bool CountTraffic { get; }

    /// <summary>Every event so far, in order.</summary>
    public IReadOnlyList<ProfileEvent> Events => _events;

    /// <summary>The highest device bytes in use seen in each phase (from the device's allocations), where any was seen.</summary>
    public IReadOnlyDictionary<ProfilePhase, long> PeakBytesInUse => _peakBytesInUse;

    /// <summary>Records a kernel launch or a GEMM; <paramref name="measure"/>, if given, yields its measured milliseconds once the recorder stops.</summary>
    public ProfileEvent Launch(ProfileEventKind kind, string name, string detail, in KernelCost cost, Func<double>? measure = null)
    {
        var e = Add(kind, name, detail, cost);
        e.PendingMeasurement = measure;
        _queuedSinceWait = true;
        return e;
    }

    /// <summary>
    /// Records a graph launch (<see cref="ProfileEventKind.Graph"/>); until the returned handle is disposed, the launches,
    /// GEMMs and copies recorded are the graph's operations (<see cref="ProfileEvent.InGraph"/>), not launches of their own.
    /// </summary>
    public IDisposable Graph(string name, string detail, Func<double>? measure = null)
    {
        Launch(ProfileEventKind.Graph, name, detail, default, measure);
        _inGraph = true;
        return new GraphEnd(this);
    }

    private sealed class GraphEnd(ProfileRecorder recorder) : IDisposable
    {
        public void Dispose() => recorder._inGraph = false;
    }

    /// <summary>Records a CPU backend op and its host-measured time.</summary>
    public void CpuOp(string name, string detail, in KernelCost cost, double measuredMs) =>
        Add(ProfileEventKind.CpuOp, name, detail, cost).MeasuredMs = measuredMs;

    /// <summary>Records a copy or fill of <paramref name="bytes"/>.</summary>
    public void Copy(ProfileEventKind kind, string name, long bytes)
    {
        KernelCost cost = kind switch
        {
            ProfileEventKind.CopyToDevice => new(0, bytes, 0, 0),
            ProfileEventKind.CopyToHost => new(bytes, 0, 0, 0),
            _ when name == "Fill" => new(0, bytes, 0, 0),
            _ => new(bytes, bytes, 0, 0),
        };
        Add(kind, name, "", cost);
        if (kind != ProfileEventKind.CopyToHost) _queuedSinceWait = true;
    }

    /// <summary>
    /// Records that the host waited for the device in <paramref name="call"/> (<c>CopyToHost</c>, <c>Synchronize</c>).
    /// A Synchronize with nothing queued since the last wait waits for nothing and is not counted; a read back always
    /// is. The call site is <paramref name="reason"/> when the caller gives one, else the first two callers outside the
    /// device layer (host only: taken only while recording).
    /// </summary>
    public void HostSync(string call, bool always, string? reason = null)
    {
        if (!always && !_queuedSinceWait) return;
        _queuedSinceWait = false;
        Add(ProfileEventKind.HostSync, call, reason ?? CallSite(), default);
    }

    /// <summary>Records a driver allocation (a miss of the caching allocator) of <paramref name="bytes"/>.</summary>
    public void DriverAllocation(long bytes) => Add(ProfileEventKind.Allocation, "allocation", $"{bytes} bytes", default).AllocatedBytes = bytes;

    /// <summary>Notes the device's bytes in use after an allocation, for the peak of the phase open now.</summary>
    public void BytesInUse(long bytes)
    {
        var phase = ProfileScope.CurrentPhase;
        if (!_peakBytesInUse.TryGetValue(phase, out long peak) || bytes > peak) _peakBytesInUse[phase] = bytes;
    }

    /// <summary>
    /// Stops recording on this thread until the returned handle is disposed: work a profile should not count, such as
    /// the prefill before a measured decoded token.
    /// </summary>
    public IDisposable Pause()
    {
        if (t_current != this) throw new InvalidOperationException("only the recorder open on this thread can pause");
        t_current = _previous;
        return new Resume(this);
    }

    private sealed class Resume(ProfileRecorder recorder) : IDisposable
    {
        private bool _done;

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            if (!recorder._stopped) t_current = recorder;
        }
    }

    /// <summary>Stops recording (restoring the recorder open before, if any) and resolves pending measured times.</summary>
    public void Dispose()
    {
        if (_stopped) return;
        _stopped = true;
        if (t_current == this) t_current = _previous;
        if (t_current is null) ProfileScope.Clear();
        foreach (var e in _events)
        {
            if (e.PendingMeasurement is not { } measure) continue;
            e.PendingMeasurement = null;
            e.MeasuredMs = measure();
        }
    }

    private ProfileEvent Add(ProfileEventKind kind, string name, string detail, KernelCost cost)
    {
        var e = new ProfileEvent(kind, name, detail, cost, Stopwatch.GetElapsedTime(_started).TotalMilliseconds) { InGraph = _inGraph };
        _events.Add(e);
        return e;
    }

    // "Backend.Method <- Caller.Method": the first frame outside the device layer and this namespace (the backend or
    // launcher that asked), then the first outside the backends (the model, optimizer or host code that needed it).
    // Every frame is walked, none skipped by count: once tiered compilation inlines this recorder's or the device's
    // frames into their callers, a fixed skip of 2 skipped the backend's frame too (the asker read one frame too high).
    private static string CallSite()
    {
        var frames = new StackTrace(false).GetFrames();
        string? asker = null;
        foreach (var frame in frames)
        {
            // DiagnosticMethodInfo names the method without reflection metadata, so trimming keeps this working.
            if (DiagnosticMethodInfo.Create(frame) is not { DeclaringTypeName: { } typeName } method) continue;
            var (ns, name) = Outer(typeName);
            if (ns.StartsWith("Phi2Native.Cuda", StringComparison.Ordinal) || ns == "Phi2Native.Profiling") continue;
            string where = $"{name}.{method.Name}";
            if (asker is null)
            {
                asker = where;
                if (!ns.StartsWith("Phi2Native.Backends", StringComparison.Ordinal)) return asker;
                continue;
            }
            if (!ns.StartsWith("Phi2Native.Backends", StringComparison.Ordinal)) return $"{asker} <- {where}";
        }
        return asker ?? "unknown";
    }

    // "Ns.Type+<>c" -> ("Ns", "Type"): a lambda's or iterator's compiler-made type names its enclosing type instead.
    private static (string Namespace, string Name) Outer(string typeName)
    {
        int nested = typeName.IndexOf('+');
        string outer = nested < 0 ? typeName : typeName[..nested];
        int dot = outer.LastIndexOf('.');
        return dot < 0 ? ("", outer) : (outer[..dot], outer[(dot + 1)..]);
    }
}
