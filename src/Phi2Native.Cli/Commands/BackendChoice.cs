using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;
using Phi2Native.Hosting;
using Phi2Native.Tensors;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// The backend a command computes on, opened through the library (<see cref="ComputeBackend"/>) from what --device and
/// --dtype said, with refusals phrased in the options' names and the device said once on the notices. Disposing it
/// disposes a CUDA backend, freeing its device memory, once the models on it are gone.
/// </summary>
internal sealed class BackendChoice : IDisposable
{
    private readonly ComputeBackend _compute;

    private BackendChoice(DeviceRequest request, ComputeBackend compute)
    {
        Request = request;
        _compute = compute;
    }

    /// <summary>What was asked for.</summary>
    public DeviceRequest Request { get; }

    /// <summary>The opened backend with its device, dtype and description, for what the library runs on it.</summary>
    public ComputeBackend Compute => _compute;

    /// <summary>The backend the command's models go on.</summary>
    public IBackend Backend => _compute.Backend;

    /// <summary>The dtype the weights and activations compute in.</summary>
    public DType DType => Request.DType;

    /// <summary>"cpu, f32", "cuda:0 NVIDIA H200 (sm_90), bf16", "emulated, f32": for the commands' summary lines.</summary>
    public string Summary => Request.Device.Kind == DeviceKind.Cuda
        ? _compute.Description
        : $"{Request.Device}, {ComputeDTypes.Name(DType)}";

    /// <summary>
    /// Checks that the backend can do what the command will (<paramref name="training"/>, or inference with or without
    /// an adapter) in the requested dtype, opens it and says which it is, on one line of <paramref name="notices"/>.
    /// </summary>
    /// <exception cref="Phi2Exception">The combination is refused, or the device cannot be opened (no GPU: the probe's reason).</exception>
    public static BackendChoice Open(DeviceRequest request, TextWriter notices, bool training = false, bool withAdapter = false)
    {
        var use = training ? ComputeUse.Training : withAdapter ? ComputeUse.InferenceWithAdapter : ComputeUse.Inference;
        ComputeBackend.Check(request.Device, request.DType, use);
        ComputeBackend compute;
        try
        {
            compute = ComputeBackend.Open(request.Device, request.DType, use, KernelSourceOptions.FromEnvironment() with { Notice = notices.WriteLine });
        }
        catch (Phi2Exception e) when (e is not EngineFaultException)
        {
            throw new Phi2Exception($"--device {request.Device}: {e.Message}; use --device cpu, or --device emulated to run the CUDA backend on the CPU", e);
        }
        // Why a GPU is missing is said by --device cuda, which fails with the probe's reason; here only that one is there.
        string hint = request.Device.Kind == DeviceKind.Cpu && CudaAvailability.Probe().IsAvailable ? "; a GPU is available: --device cuda" : "";
        notices.WriteLine($"device: {compute.Description}{hint}");
        return new BackendChoice(request, compute);
    }

    /// <summary>Disposes the backend if this choice opened it (a CUDA backend and its device); the shared CPU backend stays.</summary>
    public void Dispose() => _compute.Dispose();
}
