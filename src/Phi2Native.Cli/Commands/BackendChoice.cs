using Phi2Native.Backends;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.Hosting;
using Phi2Native.Tensors;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// The backend a command computes on and the dtype it computes in, said once on standard error. Opened from a
/// <see cref="DeviceRequest"/> after the combination is checked (so a refusal is one message naming the option, before
/// any weight is read); disposing it disposes a CUDA backend, freeing its device memory, once the models on it are gone.
/// </summary>
internal sealed class BackendChoice : IDisposable
{
    private readonly bool _owned;

    private BackendChoice(DeviceRequest request, IBackend backend)
    {
        Request = request;
        Backend = backend;
        _owned = request.Device.OwnsBackend;
    }

    /// <summary>What was asked for.</summary>
    public DeviceRequest Request { get; }

    /// <summary>The backend the command's models go on.</summary>
    public IBackend Backend { get; }

    /// <summary>The dtype the weights and activations compute in.</summary>
    public DType DType => Request.DType;

    /// <summary>"cpu, f32", "cuda:0 NVIDIA H200 (sm_90), bf16", "emulated CUDA, f32": for the commands' summary lines.</summary>
    public string Summary => Backend switch
    {
        CudaBackend { DeviceApi: EmulatedDevice } => $"emulated CUDA, {DeviceRequest.Name(DType)}",
        CudaBackend cuda => $"{cuda.Device} {cuda.DeviceApi.Name}, {DeviceRequest.Name(DType)}",
        _ => $"cpu, {DeviceRequest.Name(DType)}",
    };

    /// <summary>
    /// Checks that the backend can do what the command will (<paramref name="training"/>, or inference with or without
    /// an adapter) in the requested dtype, opens it and says which it is, on one line of <paramref name="notices"/>.
    /// </summary>
    /// <exception cref="Phi2Exception">The combination is refused, or the device cannot be opened (no GPU: the probe's reason).</exception>
    public static BackendChoice Open(DeviceRequest request, TextWriter notices, bool training = false, bool withAdapter = false)
    {
        var kind = request.Device.Kind == DeviceChoiceKind.Cpu ? DeviceKind.Cpu : DeviceKind.Cuda;
        string? refusal = training ? ComputeDTypes.TrainingRefusal(kind, request.DType) : ComputeDTypes.InferenceRefusal(kind, request.DType, withAdapter);
        if (refusal is not null)
        {
            throw new Phi2Exception($"--dtype {DeviceRequest.Name(request.DType)} on --device {request.Device}: {refusal}");
        }
        IBackend backend;
        try
        {
            backend = request.Device.CreateBackend(KernelSourceOptions.FromEnvironment() with { Notice = notices.WriteLine });
        }
        catch (Phi2Exception e)
        {
            throw new Phi2Exception($"--device {request.Device}: {e.Message}; use --device cpu, or --device emulated to run the CUDA backend on the CPU", e);
        }
        var choice = new BackendChoice(request, backend);
        notices.WriteLine($"device: {choice.Describe()}");
        return choice;
    }

    // One short line; why a GPU is missing is said by --device cuda, which fails with the probe's reason.
    private string Describe()
    {
        string dtype = DeviceRequest.Name(DType);
        return Backend switch
        {
            CudaBackend { DeviceApi: EmulatedDevice } => $"emulated, {dtype} (the CUDA kernels run on the CPU: much slower than --device cpu)",
            CudaBackend gpu => $"{gpu.Device} {gpu.DeviceApi.Name}, {dtype}",
            _ => $"cpu ({Environment.ProcessorCount} threads), {dtype}" + (CudaAvailability.Probe().IsAvailable ? "; a GPU is available: --device cuda" : ""),
        };
    }

    /// <summary>Disposes the backend if this choice opened it (a CUDA backend and its device); the shared CPU backend stays.</summary>
    public void Dispose()
    {
        if (_owned) Backend.Dispose();
    }
}
