using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>What a model computes for, since the dtype rules (<see cref="ComputeDTypes"/>) depend on it.</summary>
public enum ComputeUse
{
    /// <summary>Forward passes and generation over a base model alone.</summary>
    Inference,

    /// <summary>Forward passes and generation with a LoRA adapter applied (fp32 over a base of either dtype).</summary>
    InferenceWithAdapter,

    /// <summary>LoRA fine-tuning: forward, backward and AdamW.</summary>
    Training,
}

/// <summary>
/// A backend opened for a <see cref="DeviceChoice"/> and compute dtype, after the combination was checked, with one
/// line that says what it is (<see cref="Description"/>). Disposing it disposes a backend it opened (a CUDA backend and
/// its device, freeing the device memory), once the models on it are gone; the shared CPU backend and a host's own
/// backend stay open.
/// </summary>
/// <example><code>
/// using var compute = ComputeBackend.Open(DeviceChoice.Parse("emulated"), DType.F32, ComputeUse.Training);
/// Console.Error.WriteLine($"device: {compute.Description}");
/// </code></example>
public sealed class ComputeBackend : IDisposable
{
    private readonly bool _owned;

    private ComputeBackend(DeviceChoice device, DType dtype, IBackend backend, bool owned, string description)
    {
        Device = device;
        DType = dtype;
        Backend = backend;
        _owned = owned;
        Description = description;
    }

    /// <summary>Where it computes, in the users' words (<c>cpu</c>, <c>cuda:N</c>, <c>emulated</c>).</summary>
    public DeviceChoice Device { get; }

    /// <summary>The dtype the weights and activations compute in.</summary>
    public DType DType { get; }

    /// <summary>The backend models go on.</summary>
    public IBackend Backend { get; }

    /// <summary>
    /// One line: "cpu (16 threads), f32", "cuda:0 NVIDIA H200 (sm_90), bf16", or "emulated, f32 (the CUDA kernels
    /// run on the CPU: much slower than cpu)".
    /// </summary>
    public string Description { get; }

    /// <summary>Why <paramref name="device"/> cannot compute in <paramref name="dtype"/> for <paramref name="use"/>, or null when it can.</summary>
    public static string? Refusal(DeviceChoice device, DType dtype, ComputeUse use)
    {
        ArgumentNullException.ThrowIfNull(device);
        return use == ComputeUse.Training
            ? ComputeDTypes.TrainingRefusal(device.Kind, dtype)
            : ComputeDTypes.InferenceRefusal(device.Kind, dtype, withAdapter: use == ComputeUse.InferenceWithAdapter);
    }

    /// <summary>Refuses a combination <see cref="Refusal"/> refuses, before anything is opened.</summary>
    /// <exception cref="Phi2Exception">"--dtype bf16 on --device cpu: ..." with the reason (named as the command line's options are; a host's options carry the same two values).</exception>
    public static void Check(DeviceChoice device, DType dtype, ComputeUse use)
    {
        if (Refusal(device, dtype, use) is { } refusal)
            throw new Phi2Exception($"--dtype {ComputeDTypes.Name(dtype)} on --device {device}: {refusal}");
    }

    /// <summary>Checks the combination, then opens the backend of <paramref name="device"/>.</summary>
    /// <param name="device">Where to compute.</param>
    /// <param name="dtype">The compute dtype of the weights and activations.</param>
    /// <param name="use">What for (the dtype rules depend on it).</param>
    /// <param name="kernelSources">For the CUDA choices, a folder of kernel sources to use instead of the embedded ones; null reads <c>PHI2NATIVE_KERNEL_SOURCES</c>.</param>
    /// <exception cref="Phi2Exception">
    /// The combination is refused (<see cref="Refusal"/>, before anything is opened), or the device cannot be opened
    /// (no GPU: the message carries the CUDA probe's reason; the emulator's library does not load; an unusable kernel folder).
    /// </exception>
    public static ComputeBackend Open(DeviceChoice device, DType dtype, ComputeUse use, KernelSourceOptions? kernelSources = null)
    {
        Check(device, dtype, use);
        var (backend, deviceName) = device.Open(kernelSources);
        string name = ComputeDTypes.Name(dtype);
        string description = device.Kind switch
        {
            DeviceKind.Cpu => $"cpu ({Environment.ProcessorCount} threads), {name}",
            DeviceKind.Emulated => $"emulated, {name} (the CUDA kernels run on the CPU: much slower than cpu)",
            _ => $"{device} {deviceName}, {name}",
        };
        return new ComputeBackend(device, dtype, backend, device.OwnsBackend, description);
    }

    /// <summary>A backend of the host's own, checked for <paramref name="dtype"/> and <paramref name="use"/>; disposing the result leaves it open.</summary>
    /// <exception cref="Phi2Exception">The backend's device cannot compute in <paramref name="dtype"/> for <paramref name="use"/>.</exception>
    public static ComputeBackend Over(IBackend backend, DType dtype, ComputeUse use)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var device = DeviceChoice.Of(backend.Device);
        Check(device, dtype, use);
        return new ComputeBackend(device, dtype, backend, owned: false, $"{device} (the host's backend), {ComputeDTypes.Name(dtype)}");
    }

    /// <summary>Disposes the backend if this opened it (a CUDA backend and its device); the shared CPU backend and a host's backend stay.</summary>
    public void Dispose()
    {
        if (_owned) Backend.Dispose();
    }
}
