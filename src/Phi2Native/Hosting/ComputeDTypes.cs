using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>
/// Which dtypes a whole model can compute in, on which kind of backend, for what: the one place that says so, so a
/// command line or a host refuses a combination up front with the reason instead of failing deep inside a forward.
/// </summary>
/// <remarks>
/// The CPU backend computes in fp32 only (bf16/f16 checkpoints are widened on load); the CUDA
/// backend computes in fp32 or in bf16 (bf16 weights and activations, fp32 accumulation, statistics, softmax and loss).
/// LoRA adapters are fp32, as PEFT trains them, over a base of either dtype: over a bf16 base their branch widens its
/// input to fp32, computes in fp32 and adds into the base output in fp32 before one rounding to bf16 (LoraLinear), so
/// inference with an adapter and LoRA fine-tuning run in bf16 on the CUDA backend. Modules trained in full stay f32-only
/// (AdamW updates fp32 parameters): LoraModel refuses them over a bf16 base.
/// </remarks>
public static class ComputeDTypes
{
    /// <summary>The dtypes a model can be asked to compute in: F32 and BF16.</summary>
    public static IReadOnlyList<DType> Supported { get; } = [DType.F32, DType.BF16];

    /// <summary>Why a model on a <paramref name="device"/> backend cannot run inference (forward, generation) in <paramref name="dtype"/>, or null when it can.</summary>
    /// <param name="device">The kind of device: <see cref="DeviceKind.Cpu"/>, or <see cref="DeviceKind.Cuda"/> and <see cref="DeviceKind.Emulated"/> (the CUDA backend).</param>
    /// <param name="dtype">The compute dtype of the weights and activations.</param>
    /// <param name="withAdapter">Whether a LoRA adapter is applied on top of the base (fp32 over a base of either dtype: no longer a reason to refuse).</param>
    public static string? InferenceRefusal(DeviceKind device, DType dtype, bool withAdapter)
    {
        if (dtype == DType.F32) return null;
        if (dtype != DType.BF16) return $"{dtype} is not a compute dtype of a model here (f32 or bf16)";
        if (device == DeviceKind.Cpu)
            return "the CPU backend computes in f32 only (bf16 weights are widened to f32 when loaded); bf16 needs the CUDA backend (a GPU, or the emulated device)";
        return null;
    }

    /// <summary>
    /// Why a model on a <paramref name="device"/> backend cannot be LoRA fine-tuned in <paramref name="dtype"/> (the base's
    /// compute dtype; adapters and AdamW state stay fp32), or null when it can. Modules trained in full over a bf16 base
    /// are refused by LoraModel, which knows the selection.
    /// </summary>
    /// <param name="device">The kind of device.</param>
    /// <param name="dtype">The compute dtype of the base weights and activations.</param>
    public static string? TrainingRefusal(DeviceKind device, DType dtype) => InferenceRefusal(device, dtype, withAdapter: true);

    /// <summary>"f32", "bf16", "f16", ...: a dtype as the command line's --dtype and the device line spell it.</summary>
    public static string Name(DType dtype) => dtype == DType.BF16 ? "bf16" : dtype.ToString().ToLowerInvariant();
}
