namespace Phi2Native.Profiling;

/// <summary>What a recorded event is.</summary>
public enum ProfileEventKind
{
    /// <summary>A kernel launch through the device seam.</summary>
    Kernel,

    /// <summary>A cuBLAS or cuBLASLt call (a GEMM).</summary>
    Blas,

    /// <summary>An op computed by the CPU backend (its time is measured on the host).</summary>
    CpuOp,

    /// <summary>The host waited for the device (a read back, or a Synchronize with work queued).</summary>
    HostSync,

    /// <summary>A copy from host memory to the device.</summary>
    CopyToDevice,

    /// <summary>A copy from the device to host memory.</summary>
    CopyToHost,

    /// <summary>A copy or fill within device memory.</summary>
    CopyOnDevice,

    /// <summary>A driver allocation: a miss of the caching allocator.</summary>
    Allocation,

    /// <summary>A CUDA graph launch: one launch that runs every operation its capture recorded (on the emulated device
    /// those follow it as events with <see cref="ProfileEvent.InGraph"/> set, so their costs are still seen).</summary>
    Graph,
}

/// <summary>
/// One recorded event: a launch, a GEMM, a CPU op, a host synchronisation, a copy or a driver allocation, with the op,
/// module and phase it served and its declared cost.
/// </summary>
public sealed class ProfileEvent
{
    internal ProfileEvent(ProfileEventKind kind, string name, string detail, KernelCost cost, double startMs)
    {
        Kind = kind;
        Name = name;
        Detail = detail;
        Cost = cost;
        StartMs = startMs;
        Op = ProfileScope.CurrentOp;
        Module = ProfileScope.CurrentModule;
        Phase = ProfileScope.CurrentPhase;
    }

    // A copy of `e` with another cost and detail (ProfileScaling's events of a larger step).
    internal ProfileEvent(ProfileEvent e, string detail, KernelCost cost)
    {
        (Kind, Name, Detail, Cost, StartMs, Op, Module, Phase) = (e.Kind, e.Name, detail, cost, e.StartMs, e.Op, e.Module, e.Phase);
        AllocatedBytes = e.AllocatedBytes;
        InGraph = e.InGraph;
    }

    // A copy of `e` attributed to the op and module of `origin` (a graph replay's operation, given those of the eager
    // step it was captured from: a replay runs outside every scope).
    internal ProfileEvent(ProfileEvent e, ProfileEvent origin) : this(e, e.Detail, e.Cost)
    {
        (Op, Module) = (origin.Op, origin.Module);
        MeasuredMs = e.MeasuredMs;
        CountedBytes = e.CountedBytes;
    }

    /// <summary>What the event is.</summary>
    public ProfileEventKind Kind { get; }

    /// <summary>The kernel (<c>layernorm_f32</c>), BLAS routine (<c>cublasLtMatmul</c>), CPU op, or the call (<c>CopyToHost</c>).</summary>
    public string Name { get; }

    /// <summary>The launch shape (grid, block, dynamic shared memory), the GEMM's m, n, k and dtypes, or for a host sync its call site.</summary>
    public string Detail { get; }

    /// <summary>The op open when it was recorded (null: none).</summary>
    public string? Op { get; }

    /// <summary>The module open when it was recorded (null: none).</summary>
    public string? Module { get; }

    /// <summary>The phase open when it was recorded.</summary>
    public ProfilePhase Phase { get; }

    /// <summary>The declared cost (copies: their bytes; syncs and allocations: none).</summary>
    public KernelCost Cost { get; }

    /// <summary>Host milliseconds from the recorder's start to the call.</summary>
    public double StartMs { get; }

    /// <summary>The measured duration (device events on a GPU, the host clock on the CPU backend); null where nothing meaningful was measured (the emulator).</summary>
    public double? MeasuredMs { get; internal set; }

    /// <summary>Bytes of device memory the launch really read and wrote, each byte once, as the emulator counted them (null unless counted).</summary>
    public (long Read, long Written)? CountedBytes { get; internal set; }

    /// <summary>Whether a graph launch ran this kernel, GEMM, copy or fill (it is not a launch of its own).</summary>
    public bool InGraph { get; internal set; }

    /// <summary>For an allocation: the bytes the driver was asked for.</summary>
    public long AllocatedBytes { get; internal set; }

    internal Func<double>? PendingMeasurement { get; set; }

    /// <inheritdoc/>
    public override string ToString() => $"{Kind} {Name} {Detail}";
}
