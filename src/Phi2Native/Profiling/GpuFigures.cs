namespace Phi2Native.Profiling;

/// <summary>
/// The figures of a GPU the roofline model (<see cref="RooflineModel"/>) prices launches with: peaks from the vendor's
/// sheet, and the efficiencies fixed by the issue "Measure it" (section 3) from what was seen on the GPU machines this
/// project can use. They change only with a recorded GPU measurement (bench/RESULTS.md, "Where the time goes"), so
/// later work cannot move its modelled figures by editing constants. Every figure the model gives is modelled.
/// </summary>
/// <param name="Name">The GPU, as tables name it.</param>
/// <param name="TensorCoreFlopsPerSecond">Dense bf16 peak on tensor cores.</param>
/// <param name="SimtFlopsPerSecond">fp32 peak of ordinary (SIMT) instructions.</param>
/// <param name="BytesPerSecond">HBM bandwidth (bytes read plus written).</param>
/// <param name="TensorCoreEfficiency">e_tc: the share of the tensor-core peak a cuBLAS GEMM reaches.</param>
/// <param name="BlasSimtEfficiency">e_simt for cuBLAS's fp32 GEMMs.</param>
/// <param name="BlasMemoryEfficiency">e_mem for cuBLAS's GEMMs (and copies).</param>
/// <param name="KernelSimtEfficiency">e_simt for the hand-written kernels.</param>
/// <param name="KernelMemoryEfficiency">e_mem for the hand-written kernels.</param>
/// <param name="LaunchSeconds">Launch overhead per kernel or GEMM, launched one by one.</param>
/// <param name="GraphLaunchSeconds">Launch overhead per kernel inside a CUDA graph.</param>
public sealed record GpuFigures(string Name, double TensorCoreFlopsPerSecond, double SimtFlopsPerSecond, double BytesPerSecond,
    double TensorCoreEfficiency, double BlasSimtEfficiency, double BlasMemoryEfficiency, double KernelSimtEfficiency,
    double KernelMemoryEfficiency, double LaunchSeconds, double GraphLaunchSeconds)
{
    // Derivation, one place (the section 3):
    // - H100 SXM: 989 TFLOP/s dense bf16 on tensor cores, 67 TFLOP/s fp32 SIMT, HBM3 3.35 TB/s. H200: the same
    //   compute, HBM3e 4.8 TB/s.
    // - e_tc = 0.79: bf16 8192^3 GEMMs reached 770-800 TFLOP/s through PyTorch on these machines: 785 / 989 = 0.79.
    // - e_mem for copies and cuBLAS = 0.9 (H100) / 0.9 (H200): device-to-device copies reached 3.0 of 3.35 TB/s
    //   (0.896) and 4.3 of 4.8 TB/s (0.896), counting bytes read and written.
    // - Hand-written kernels, conservatively: e_mem 0.6 (row reductions, online softmax and one-thread-per-element
    //   kernels without vector loads rarely pass 60 % of a copy's bandwidth), e_simt 0.3 (fp32 FMA pipes, with
    //   shuffles, barriers and the exp/tanh units in the way; the attention kernel is SIMT fp32, not tensor cores).
    // - cuBLAS fp32 (no TF32: the engine asks for CUBLAS_DEFAULT_MATH) e_simt 0.7.
    // - Launch overhead: ~4 us a kernel launched alone, ~1 us inside a CUDA graph.

    /// <summary>NVIDIA H100 SXM.</summary>
    public static GpuFigures H100 { get; } = new("H100 SXM", 989e12, 67e12, 3.35e12,
        TensorCoreEfficiency: 0.79, BlasSimtEfficiency: 0.7, BlasMemoryEfficiency: 3.0 / 3.35, KernelSimtEfficiency: 0.3,
        KernelMemoryEfficiency: 0.6, LaunchSeconds: 4e-6, GraphLaunchSeconds: 1e-6);

    /// <summary>NVIDIA H200: the H100's compute with 4.8 TB/s.</summary>
    public static GpuFigures H200 { get; } = new("H200", 989e12, 67e12, 4.8e12,
        TensorCoreEfficiency: 0.79, BlasSimtEfficiency: 0.7, BlasMemoryEfficiency: 4.3 / 4.8, KernelSimtEfficiency: 0.3,
        KernelMemoryEfficiency: 0.6, LaunchSeconds: 4e-6, GraphLaunchSeconds: 1e-6);
}
