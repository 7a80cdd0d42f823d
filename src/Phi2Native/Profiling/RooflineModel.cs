namespace Phi2Native.Profiling;

/// <summary>
/// A roofline model of a GPU (the issue "Measure it", section 3), stated as a model: a launch takes
/// <c>max(bytes / (bandwidth x e_mem), tensor-core flops / (tensor peak x e_tc) + SIMT flops / (SIMT peak x e_simt))
/// + launch overhead</c>, with the figures and efficiencies of <see cref="GpuFigures"/>. A kernel's flops count at the
/// tensor-core rate only when at least <see cref="MinimumTensorCoreShare"/> of them are declared as tensor-core flops;
/// otherwise all run at the SIMT rate. Its figures are modelled, never measured, and every table says so.
/// </summary>
public sealed class RooflineModel(GpuFigures gpu)
{
    /// <summary>The share of a launch's flops that must be tensor-core flops for them to be priced at the tensor-core rate.</summary>
    public const double MinimumTensorCoreShare = 0.9;

    /// <summary>The GPU priced.</summary>
    public GpuFigures Gpu { get; } = gpu;

    /// <summary>
    /// Modelled seconds of one launch of <paramref name="cost"/>: cuBLAS's efficiencies when <paramref name="blas"/>, the
    /// hand-written kernels' otherwise; launched alone, or inside a CUDA graph when <paramref name="inGraph"/>.
    /// </summary>
    public double Seconds(in KernelCost cost, bool blas, bool inGraph = false)
    {
        double memory = cost.Bytes / (Gpu.BytesPerSecond * (blas ? Gpu.BlasMemoryEfficiency : Gpu.KernelMemoryEfficiency));
        double simtRate = Gpu.SimtFlopsPerSecond * (blas ? Gpu.BlasSimtEfficiency : Gpu.KernelSimtEfficiency);
        double compute;
        if (cost.Flops > 0 && cost.TensorCoreFlops >= MinimumTensorCoreShare * cost.Flops)
            compute = cost.TensorCoreFlops / (Gpu.TensorCoreFlopsPerSecond * Gpu.TensorCoreEfficiency) + cost.SimtFlops / simtRate;
        else
            compute = cost.Flops / simtRate;
        return Math.Max(memory, compute) + (inGraph ? Gpu.GraphLaunchSeconds : Gpu.LaunchSeconds);
    }

    /// <summary>Modelled seconds of a recorded event: a launch or GEMM as <see cref="Seconds(in KernelCost, bool, bool)"/>, a copy at the copy bandwidth, anything else 0.</summary>
    public double Seconds(ProfileEvent e) => e.Kind switch
    {
        ProfileEventKind.Kernel => Seconds(e.Cost.IsDeclared ? e.Cost : default, blas: false, e.InGraph),
        ProfileEventKind.Blas => Seconds(e.Cost, blas: true, e.InGraph),
        ProfileEventKind.CopyOnDevice => e.Cost.Bytes / (Gpu.BytesPerSecond * Gpu.BlasMemoryEfficiency) + Gpu.LaunchSeconds,
        _ => 0,
    };

    /// <summary>Modelled milliseconds of recorded events laid end to end on one stream (<see cref="Seconds(ProfileEvent)"/> each).</summary>
    public double Milliseconds(IEnumerable<ProfileEvent> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        return events.Sum(Seconds) * 1e3;
    }

    /// <summary>Model flops utilisation: <paramref name="modelFlops"/> (the model's, by the convention stated beside them) over the tensor-core peak times <paramref name="seconds"/>.</summary>
    public double Mfu(double modelFlops, double seconds) => seconds > 0 ? modelFlops / (Gpu.TensorCoreFlopsPerSecond * seconds) : 0;
}
