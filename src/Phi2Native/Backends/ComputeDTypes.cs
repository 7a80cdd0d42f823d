using Phi2Native.Tensors;

namespace Phi2Native.Backends;

/// <summary>
/// Which dtypes a whole model can compute in, on which kind of backend, for what: the one place that says so, so a
/// command line or a host refuses a combination up front with the reason instead of failing deep inside a forward.
/// </summary>
/// <remarks>
/// Per DESIGN "Numerics": the CPU backend computes in fp32 only (bf16/f16 checkpoints are widened on load); the CUDA
/// backend computes in fp32 or in bf16 (bf16 weights and activations, fp32 accumulation, statistics, softmax and loss).
/// LoRA adapters are fp32, as PEFT trains them, and the CUDA backend's ops take one dtype for all their inputs, so an
/// adapter over a bf16 base (the mixed bf16 x fp32 product and sum) is not there yet: it runs in f32.
/// </remarks>
public static class ComputeDTypes
{
    /// <summary>The dtypes a model can be asked to compute in: F32 and BF16.</summary>
    public static IReadOnlyList<DType> Supported { get; } = [DType.F32, DType.BF16];

    /// <summary>Why a model on a <paramref name="device"/> backend cannot run inference (forward, generation) in <paramref name="dtype"/>, or null when it can.</summary>
    /// <param name="device">The kind of backend: <see cref="DeviceKind.Cpu"/> or <see cref="DeviceKind.Cuda"/> (a GPU or the emulator).</param>
    /// <param name="dtype">The compute dtype of the weights and activations.</param>
    /// <param name="withAdapter">Whether a LoRA adapter is applied on top of the base.</param>
    public static string? InferenceRefusal(DeviceKind device, DType dtype, bool withAdapter)
    {
        if (dtype == DType.F32) return null;
        if (dtype != DType.BF16) return $"{dtype} is not a compute dtype of a model here (f32 or bf16)";
        if (device != DeviceKind.Cuda)
            return "the CPU backend computes in f32 only (bf16 weights are widened to f32 when loaded); bf16 needs the CUDA backend (a GPU, or the emulated device)";
        if (withAdapter)
            return "a LoRA adapter cannot run over a bf16 base yet: adapters are fp32 and the CUDA backend does not mix bf16 and fp32 in one op; " +
                   "run it in f32, or merge the adapter into the base first (phi2 merge) and run the merged model in bf16";
        return null;
    }

    /// <summary>Why a model on a <paramref name="device"/> backend cannot be fine-tuned in <paramref name="dtype"/>, or null when it can.</summary>
    /// <param name="device">The kind of backend.</param>
    /// <param name="dtype">The compute dtype of the base weights and activations.</param>
    public static string? TrainingRefusal(DeviceKind device, DType dtype)
    {
        if (dtype == DType.F32) return null;
        if (InferenceRefusal(device, dtype, withAdapter: false) is { } refusal) return refusal;
        return "fine-tuning runs in f32 only for now: the trained LoRA adapters and modules are fp32 and the CUDA backend does not mix " +
               "them with a bf16 base in one op yet";
    }
}
