using System.Text.Json;
using System.Text.Json.Nodes;

namespace Phi2Native.Profiling;

/// <summary>One row of a <see cref="ProfileReport"/>: a kernel, GEMM routine, copy or CPU op, over all its calls in the measured step.</summary>
/// <param name="Name">The kernel, routine or op.</param>
/// <param name="Calls">How many times it ran.</param>
/// <param name="Bytes">Declared bytes read plus written, over all calls (0 where nothing was declared: the CPU's ops).</param>
/// <param name="Flops">Declared flops, tensor-core plus SIMT.</param>
/// <param name="MeasuredMs">Measured milliseconds (GPU events, the CPU's host clock); null on the emulator.</param>
/// <param name="ModelH100Ms">Modelled milliseconds on an H100 SXM (<see cref="RooflineModel"/>); null for a CPU op.</param>
/// <param name="ModelH200Ms">Modelled milliseconds on an H200; null for a CPU op.</param>
public sealed record ProfileRow(string Name, int Calls, long Bytes, long Flops, double? MeasuredMs, double? ModelH100Ms, double? ModelH200Ms)
{
    /// <summary>Flops per byte (0 without bytes).</summary>
    public double Intensity => Bytes > 0 ? (double)Flops / Bytes : 0;
}

/// <summary>
/// What one measured step did, summed from a <see cref="ProfileRecorder"/>'s events: a row per kernel or op sorted by
/// modelled H100 time, the totals (launches, host syncs, driver allocations, bytes, flops, peak device memory per
/// phase), and the modelled step on H100 SXM and H200 with its MFU. Every modelled figure is modelled, not measured.
/// </summary>
public sealed class ProfileReport
{
    private static readonly RooflineModel H100 = new(GpuFigures.H100), H200 = new(GpuFigures.H200);

    /// <summary>Sums <paramref name="events"/> (the measured step's) into a report.</summary>
    /// <param name="device">The device, in the one vocabulary (<c>cpu</c>, <c>emulated</c>, <c>cuda:0</c>).</param>
    /// <param name="what">train, lora, decode or prefill.</param>
    /// <param name="batch">B.</param>
    /// <param name="sequence">T.</param>
    /// <param name="tokens">Tokens the step processed (B x T, or B for a decoded token), for tokens/s.</param>
    /// <param name="modelFlops">The model's flops by <see cref="ModelFlops"/>' convention, for MFU.</param>
    /// <param name="events">The recorded events of the measured step.</param>
    /// <param name="peakBytesInUse">The recorder's peak device bytes per phase.</param>
    public ProfileReport(string device, string what, int batch, int sequence, long tokens, double modelFlops,
        IReadOnlyList<ProfileEvent> events, IReadOnlyDictionary<ProfilePhase, long> peakBytesInUse)
    {
        Device = device;
        What = what;
        Batch = batch;
        Sequence = sequence;
        Tokens = tokens;
        ModelFlopsOfStep = modelFlops;
        Events = events;
        PeakBytesInUse = peakBytesInUse;
        bool emulated = device == "emulated";
        Rows = events.Where(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas or ProfileEventKind.CopyOnDevice or ProfileEventKind.CpuOp or ProfileEventKind.Graph)
            .GroupBy(e => e.Name, StringComparer.Ordinal)
            .Select(g =>
            {
                bool cpu = g.First().Kind == ProfileEventKind.CpuOp;
                double? measured = emulated || g.All(e => e.MeasuredMs is null) ? null : g.Sum(e => e.MeasuredMs ?? 0);
                return new ProfileRow(g.Key, g.Count(), g.Sum(e => e.Cost.Bytes), g.Sum(e => e.Cost.Flops), measured,
                    cpu ? null : g.Sum(e => H100.Seconds(e)) * 1e3, cpu ? null : g.Sum(e => H200.Seconds(e)) * 1e3);
            })
            .OrderByDescending(r => r.ModelH100Ms ?? 0).ThenByDescending(r => r.MeasuredMs ?? 0).ThenBy(r => r.Name, StringComparer.Ordinal)
            .ToList();
        // A graph launch is one launch; the kernels and GEMMs it ran are priced in Rows but are not launches of their own.
        Launches = events.Count(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas ? !e.InGraph : e.Kind == ProfileEventKind.Graph);
        HostSyncs = events.Count(e => e.Kind == ProfileEventKind.HostSync);
        Allocations = events.Count(e => e.Kind == ProfileEventKind.Allocation);
        Bytes = Rows.Sum(r => r.Bytes);
        Flops = Rows.Sum(r => r.Flops);
        ModelH100Ms = Rows.Sum(r => r.ModelH100Ms ?? 0);
        ModelH200Ms = Rows.Sum(r => r.ModelH200Ms ?? 0);
        MeasuredMs = Rows.All(r => r.MeasuredMs is null) ? null : Rows.Sum(r => r.MeasuredMs ?? 0);
    }

    /// <summary>The device.</summary>
    public string Device { get; }

    /// <summary>train, lora, decode or prefill.</summary>
    public string What { get; }

    /// <summary>B.</summary>
    public int Batch { get; }

    /// <summary>T.</summary>
    public int Sequence { get; }

    /// <summary>Tokens of the step.</summary>
    public long Tokens { get; }

    /// <summary>The model's flops of the step (<see cref="ModelFlops"/>).</summary>
    public double ModelFlopsOfStep { get; }

    /// <summary>The events of the measured step.</summary>
    public IReadOnlyList<ProfileEvent> Events { get; }

    /// <summary>Peak device bytes in use per phase (GPU and emulated devices).</summary>
    public IReadOnlyDictionary<ProfilePhase, long> PeakBytesInUse { get; }

    /// <summary>A row per kernel, GEMM routine, copy or CPU op, by modelled H100 time, longest first.</summary>
    public IReadOnlyList<ProfileRow> Rows { get; }

    /// <summary>Kernel launches and GEMM calls.</summary>
    public int Launches { get; }

    /// <summary>Host synchronisations.</summary>
    public int HostSyncs { get; }

    /// <summary>Driver allocations (caching-allocator misses).</summary>
    public int Allocations { get; }

    /// <summary>Declared bytes, all rows.</summary>
    public long Bytes { get; }

    /// <summary>Declared flops, all rows.</summary>
    public long Flops { get; }

    /// <summary>Measured milliseconds, summed over the rows (null on the emulator).</summary>
    public double? MeasuredMs { get; }

    /// <summary>Modelled milliseconds of the step on an H100 SXM: the launches one after another on one stream.</summary>
    public double ModelH100Ms { get; }

    /// <summary>Modelled milliseconds of the step on an H200.</summary>
    public double ModelH200Ms { get; }

    /// <summary>Modelled MFU on an H100 SXM.</summary>
    public double ModelH100Mfu => H100.Mfu(ModelFlopsOfStep, ModelH100Ms / 1e3);

    /// <summary>Modelled MFU on an H200.</summary>
    public double ModelH200Mfu => H200.Mfu(ModelFlopsOfStep, ModelH200Ms / 1e3);

    /// <summary>The report as JSON for harnesses (field names stable; see the README's "phi2 profile").</summary>
    public string ToJson()
    {
        var kernels = new JsonArray();
        foreach (var r in Rows)
            kernels.Add((JsonNode)new JsonObject
            {
                ["name"] = r.Name, ["calls"] = r.Calls, ["bytes"] = r.Bytes, ["flops"] = r.Flops, ["intensity"] = Math.Round(r.Intensity, 4),
                ["measured_ms"] = r.MeasuredMs, ["model_h100_ms"] = r.ModelH100Ms, ["model_h200_ms"] = r.ModelH200Ms,
            });
        var peaks = new JsonObject();
        foreach (var (phase, bytes) in PeakBytesInUse.OrderBy(p => p.Key)) peaks[phase.ToString().ToLowerInvariant()] = bytes;
        var json = new JsonObject
        {
            ["device"] = Device, ["what"] = What, ["batch"] = Batch, ["seq"] = Sequence, ["tokens"] = Tokens,
            ["launches"] = Launches, ["host_syncs"] = HostSyncs, ["allocations"] = Allocations, ["bytes"] = Bytes, ["flops"] = Flops,
            ["measured_ms"] = MeasuredMs, ["peak_bytes"] = peaks, ["kernels"] = kernels,
            ["model_h100_ms"] = ModelH100Ms, ["model_h200_ms"] = ModelH200Ms, ["model_h100_mfu"] = ModelH100Mfu, ["model_h200_mfu"] = ModelH200Mfu,
            ["model_flops"] = ModelFlopsOfStep, ["model_flops_convention"] = ModelFlops.Convention,
            ["modelled"] = "model_* figures are modelled (a roofline of H100 SXM and H200), not measured",
        };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// The step as a Chrome trace (JSON; Perfetto and chrome://tracing open it): one complete event per launch, GEMM,
    /// copy or CPU op, and an instant event per host sync. Durations are measured on cpu and cuda, and modelled (H100 SXM,
    /// laid end to end) on the emulator, whose host times say nothing about a GPU.
    /// </summary>
    public string ToChromeTrace()
    {
        bool modelled = MeasuredMs is null;
        var trace = new JsonArray();
        double clock = 0;
        foreach (var e in Events)
        {
            double? duration = modelled
                ? e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas or ProfileEventKind.CopyOnDevice ? H100.Seconds(e) * 1e6 : null
                : e.MeasuredMs * 1e3;
            double start = modelled ? clock : e.StartMs * 1e3;
            var args = new JsonObject { ["detail"] = e.Detail, ["op"] = e.Op, ["module"] = e.Module, ["phase"] = e.Phase.ToString().ToLowerInvariant() };
            if (e.Cost.IsDeclared) { args["bytes"] = e.Cost.Bytes; args["flops"] = e.Cost.Flops; }
            if (e.Kind == ProfileEventKind.HostSync || duration is null)
            {
                trace.Add((JsonNode)new JsonObject { ["name"] = e.Name, ["cat"] = e.Kind.ToString(), ["ph"] = "i", ["s"] = "t", ["ts"] = start, ["pid"] = 1, ["tid"] = 1, ["args"] = args });
                continue;
            }
            trace.Add((JsonNode)new JsonObject
            {
                ["name"] = e.Name, ["cat"] = e.Kind.ToString(), ["ph"] = "X", ["ts"] = start, ["dur"] = duration, ["pid"] = 1, ["tid"] = 1, ["args"] = args,
            });
            if (modelled) clock += duration.Value;
        }
        var root = new JsonObject
        {
            ["traceEvents"] = trace, ["displayTimeUnit"] = "ms",
            ["otherData"] = new JsonObject { ["device"] = Device, ["what"] = What, ["durations"] = modelled ? "modelled (H100 SXM roofline), not measured" : "measured" },
        };
        return root.ToJsonString();
    }
}
