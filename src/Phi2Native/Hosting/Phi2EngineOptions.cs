using Phi2Native.Backends;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>What <see cref="Phi2Engine.Load(Phi2EngineOptions)"/> loads, and where and in which dtype it computes.</summary>
/// <example><code>
/// using var engine = Phi2Engine.Load(new Phi2EngineOptions
/// {
///     ModelDirectory = "/models/phi-2", Device = DeviceChoice.Cuda(0), DType = DType.BF16,
/// });
/// </code></example>
public sealed record Phi2EngineOptions
{
    /// <summary>The model folder (config.json, weights, vocab.json, merges.txt); null for the embedded tiny model.</summary>
    public string? ModelDirectory { get; init; }

    /// <summary>A PEFT LoRA adapter folder to apply (with its added tokens), or null.</summary>
    public string? AdapterDirectory { get; init; }

    /// <summary>
    /// Where to compute when <see cref="Backend"/> is null: <see cref="DeviceChoice.Cpu"/> (the default),
    /// <see cref="DeviceChoice.Cuda"/> or <see cref="DeviceChoice.Emulated"/>. The engine opens that backend and
    /// disposes it with itself.
    /// </summary>
    public DeviceChoice Device { get; init; } = DeviceChoice.Cpu;

    /// <summary>
    /// A backend of the host's own to load the model onto, instead of opening <see cref="Device"/>; the engine does not
    /// dispose it (several engines may share one), so the host disposes it after the engines on it.
    /// </summary>
    public IBackend? Backend { get; init; }

    /// <summary>
    /// The dtype the weights and activations compute in: <see cref="Tensors.DType.F32"/> (the default) or
    /// <see cref="Tensors.DType.BF16"/> on the CUDA backend; <see cref="ComputeDTypes.InferenceRefusal"/>
    /// says which combinations are refused and why.
    /// </summary>
    public DType DType { get; init; } = DType.F32;

    /// <summary>
    /// A folder of kernel sources (<c>*.cu</c>, <c>common.cuh</c>) the CUDA backend takes instead of the embedded ones,
    /// file by file, so a kernel can be edited and tried without rebuilding (NVRTC compiles them on a GPU; g++ builds
    /// an emulator from them on the emulated device); <see cref="Warn"/> hears which files came from it. Null reads
    /// <c>PHI2NATIVE_KERNEL_SOURCES</c>; only a device the engine opens itself (<see cref="Device"/>) uses it.
    /// </summary>
    public string? KernelSourceDirectory { get; init; }

    /// <summary>Receives non-fatal remarks while loading (e.g. a tokenizer fallback, which kernel sources came from a folder).</summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Receives the fraction of the weights loaded, from 0 to 1 (a real Phi-2 takes a while to read).</summary>
    public IProgress<double>? LoadProgress { get; init; }
}
