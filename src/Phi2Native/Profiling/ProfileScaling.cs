using System.Globalization;
using System.Text.RegularExpressions;
using Phi2Native.Cuda.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Profiling;

/// <summary>
/// The events of a step at another batch, length and depth, modelled from a step recorded at smaller ones by the cost
/// formulas: what a run at B 4, T 2048 and 32 layers would launch, from one that fits the emulator in minutes. Modelled,
/// never measured: it assumes the larger step launches the same kernels per layer (true of this engine, whose launches
/// depend on shapes only through their sizes) and that each launch's cost follows its shape.
/// </summary>
/// <remarks>
/// Rules, per recorded event: the added layers repeat the top recorded layer's work (the lowest layer does less: the
/// backward stops in it); the optimizer's launches (multi-tensor: a fixed few per step) and its one status read stay as
/// many, their costs (and the optimizer phase's copies and fills) scaled with the trained elements. A GEMM is recomputed from its m, n and k with the recorded rows
/// (B x T, or B for a decoded token) replaced by the new ones, its epilogue's extra traffic scaled with the rows.
/// Attention's flops scale with B x Tq x Tk (causal, so quadratic in T outside decoding) and its bytes with B x Tk.
/// Every other kernel and device copy scales with the rows, except in the optimizer, which does not depend on them, and
/// fills (zeroed gradient accumulators, flags), which are parameter-sized. The LoRA kernels (kernels/lora.cu, and
/// kernels/lora_qkv.cu's over q, k and v's adapters together) read or write their module's adapter (A [r, in], B [out, r],
/// fp32) beside the rows: that part stays, sized by the module's backward lora_weight_grad (lora_qkv_weight_grad)
/// launches (dB's, then dA's written bytes), and the rest scales with the rows.
/// Host syncs repeat with their layer's work; driver allocations are not modelled (dropped).
/// </remarks>
public static partial class ProfileScaling
{
    /// <summary>
    /// The events of a step recorded at (<paramref name="batch"/>, <paramref name="sequence"/>, <paramref name="layers"/>)
    /// modelled at (<paramref name="toBatch"/>, <paramref name="toSequence"/>, <paramref name="toLayers"/>);
    /// <paramref name="decode"/>: one token per row after a context of the sequence; <paramref name="trainedElementsFactor"/>:
    /// the trained elements at the new depth over those recorded (1 when nothing trains), which the optimizer's work follows.
    /// </summary>
    /// <exception cref="Phi2Exception">A GEMM detail that is not one, or fewer layers than recorded.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="trainedElementsFactor"/> not a finite number above 0.</exception>
    public static IReadOnlyList<ProfileEvent> Scale(IReadOnlyList<ProfileEvent> events, int batch, int sequence, int layers,
        int toBatch, int toSequence, int toLayers, bool decode, double trainedElementsFactor = 1)
    {
        if (!(trainedElementsFactor > 0 && double.IsFinite(trainedElementsFactor)))
            throw new ArgumentOutOfRangeException(nameof(trainedElementsFactor), trainedElementsFactor, "a finite number above 0");
        if (toLayers < layers) throw new Phi2Exception($"modelling {toLayers} layers from a run of {layers}: the model can add layers, not remove them");
        int topRepeat = 1 + toLayers - layers;
        string top = $"model.layers.{layers - 1}";
        long rows = decode ? batch : (long)batch * sequence, toRows = decode ? toBatch : (long)toBatch * toSequence;
        double rowFactor = (double)toRows / rows;
        double queries = decode ? 1 : sequence, toQueries = decode ? 1 : toSequence;
        double attentionFlops = toBatch * toQueries * toSequence / (batch * queries * sequence);
        double attentionBytes = (double)toBatch * toSequence / ((double)batch * sequence);
        var adapters = LoraAdapterBytes(events);
        var scaled = new List<ProfileEvent>();
        foreach (var e in events)
        {
            if (e.Kind == ProfileEventKind.Allocation) continue;
            bool optimizer = e.Phase == ProfilePhase.Optimizer;
            int repeat = !optimizer && e.Module is { } m && (m == top || m.StartsWith(top + ".", StringComparison.Ordinal)) ? topRepeat : 1;
            var (detail, cost) = e.Kind switch
            {
                ProfileEventKind.Blas => Gemm(e, rows, toRows),
                ProfileEventKind.Kernel when e.Name.Contains("attention", StringComparison.Ordinal) && !e.Name.Contains("delta", StringComparison.Ordinal) =>
                    (e.Detail, Times(e.Cost, attentionBytes, attentionFlops)),
                ProfileEventKind.Kernel when !optimizer && e.Name.StartsWith("lora_", StringComparison.Ordinal) =>
                    (e.Detail, Lora(e, adapters, rowFactor)),
                // The optimizer's launches, table uploads and fills (zeroed gradients) follow the trained elements.
                ProfileEventKind.Kernel or ProfileEventKind.CopyOnDevice or ProfileEventKind.CopyToDevice when optimizer =>
                    (e.Detail, Times(e.Cost, trainedElementsFactor, trainedElementsFactor)),
                // Fills zero gradient accumulators (parameter-sized) and flags: they do not grow with the rows.
                ProfileEventKind.CopyOnDevice when e.Name == "Fill" => (e.Detail, e.Cost),
                ProfileEventKind.Kernel or ProfileEventKind.CopyOnDevice or ProfileEventKind.CopyToDevice or ProfileEventKind.CopyToHost when !optimizer =>
                    (e.Detail, Times(e.Cost, rowFactor, rowFactor)),
                _ => (e.Detail, e.Cost),
            };
            for (int i = 0; i < repeat; i++) scaled.Add(new ProfileEvent(e, detail, cost));
        }
        return scaled;
    }

    // Per module, the bytes of B and of A (fp32): the written bytes of its backward's lora_weight_grad launches, dB's first.
    private static Dictionary<string, (long B, long A)> LoraAdapterBytes(IReadOnlyList<ProfileEvent> events)
    {
        var adapters = new Dictionary<string, (long B, long A)>();
        foreach (var group in events.Where(e => e.Kind == ProfileEventKind.Kernel && e.Phase == ProfilePhase.Backward && e.Module is not null
                     && IsWeightGradient(e.Name) && e.Cost.IsDeclared).GroupBy(e => e.Module!))
        {
            var written = group.Select(e => e.Cost.BytesWritten).ToList();
            if (written.Count >= 2) adapters[group.Key] = (written[0], written[1]);
        }
        return adapters;
    }

    // A LoRA launch: its adapter traffic fixed (lora_weight_grad: the gradient written, r x width elements of 4 bytes, and
    // its reduction's flops an element: 9 on tensor cores, kernels/lora_mma.cuh's 7 adds of the warps' partial sums and 2
    // scalings, 1 in the SIMT kernels), the rest scaled with the rows. A weight gradient that accumulates also reads the
    // gradient (and adds 1 flop an element): never in a profiled step, whose adapter gradients are all new (written), so
    // that read would be scaled with the rows. Without the module's sizes (no backward in the run),
    // all of it scales with the rows.
    private static KernelCost Lora(ProfileEvent e, Dictionary<string, (long B, long A)> adapters, double rowFactor)
    {
        if (!e.Cost.IsDeclared) return e.Cost;
        KernelCost fixedPart;
        if (IsWeightGradient(e.Name))
            fixedPart = new(0, e.Cost.BytesWritten, 0, e.Cost.BytesWritten / 4 * (e.Cost.TensorCoreFlops > 0 ? 9 : 1));
        else if (e.Module is null || !adapters.TryGetValue(e.Module, out var sizes))
            return Times(e.Cost, rowFactor, rowFactor);
        else
            fixedPart = new(e.Name.StartsWith("lora_up", StringComparison.Ordinal) || e.Name.StartsWith("lora_qkv_up", StringComparison.Ordinal) ? sizes.B : sizes.A, 0, 0, 0);
        var rowsPart = new KernelCost(e.Cost.BytesRead - fixedPart.BytesRead, e.Cost.BytesWritten - fixedPart.BytesWritten,
            e.Cost.TensorCoreFlops, e.Cost.SimtFlops - fixedPart.SimtFlops);
        return fixedPart + Times(rowsPart, rowFactor, rowFactor);
    }

    private static bool IsWeightGradient(string name) =>
        name.StartsWith("lora_weight_grad", StringComparison.Ordinal) || name.StartsWith("lora_qkv_weight_grad", StringComparison.Ordinal);

    private static KernelCost Times(KernelCost cost, double bytes, double flops) => !cost.IsDeclared ? cost : new(
        (long)Math.Round(cost.BytesRead * bytes), (long)Math.Round(cost.BytesWritten * bytes),
        (long)Math.Round(cost.TensorCoreFlops * flops), (long)Math.Round(cost.SimtFlops * flops));

    private static (string Detail, KernelCost Cost) Gemm(ProfileEvent e, long rows, long toRows)
    {
        var match = GemmDetail().Match(e.Detail);
        if (!match.Success) throw new Phi2Exception($"cannot model {e.Name} at another shape: its detail \"{e.Detail}\" is not a GEMM's");
        int Read(string group) => int.Parse(match.Groups[group].Value, CultureInfo.InvariantCulture);
        int m = Read("m"), n = Read("n"), k = Read("k"), count = match.Groups["batch"].Success ? Read("batch") : 1;
        var inputs = Enum.Parse<DType>(match.Groups["a"].Value);
        var output = Enum.Parse<DType>(match.Groups["c"].Value);
        bool readsC = match.Groups["readsC"].Success;
        int Swap(int dimension) => dimension == rows ? checked((int)toRows) : dimension;
        var before = BlasCost.Gemm(m, n, k, count, inputs, output, readsC);
        var after = BlasCost.Gemm(Swap(m), Swap(n), Swap(k), count, inputs, output, readsC);
        double factor = (double)toRows / rows;
        var epilogue = new KernelCost(e.Cost.BytesRead - before.BytesRead, e.Cost.BytesWritten - before.BytesWritten,
            e.Cost.TensorCoreFlops - before.TensorCoreFlops, e.Cost.SimtFlops - before.SimtFlops);
        string detail = $"m {Swap(m)} n {Swap(n)} k {Swap(k)}{e.Detail[match.Groups["k"].Index..][match.Groups["k"].Length..]}";
        return (detail, after + Times(epilogue, factor, factor));
    }

    [GeneratedRegex(@"^m (?<m>\d+) n (?<n>\d+) k (?<k>\d+)( x (?<batch>\d+))? (?<a>\w+)->(?<c>\w+)(?<readsC> \+C)?")]
    private static partial Regex GemmDetail();
}
