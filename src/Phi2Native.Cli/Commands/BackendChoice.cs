using Phi2Native.Backends.Cpu;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// The backend a command computes on, said once on standard error. Until the CUDA backend lands every command uses
/// the CPU; the probe still says whether a CUDA driver is there, so a user knows what the engine sees.
/// </summary>
internal static class BackendChoice
{
    public static IBackend Choose(TextWriter error)
    {
        var cuda = CudaAvailability.Probe();
        error.WriteLine(cuda.IsAvailable
            ? $"device: cpu ({Environment.ProcessorCount} threads); {cuda.Summary} (the CUDA backend is not built yet)"
            : $"device: cpu ({Environment.ProcessorCount} threads); {cuda.Reason}");
        return CpuBackend.Default;
    }
}
