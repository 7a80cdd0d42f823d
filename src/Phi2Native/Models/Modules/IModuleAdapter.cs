using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>
/// Something attached to a module that changes its output, such as a LoRA adapter: the module computes its own
/// (usually frozen) output and hands it here with the module's input.
/// </summary>
public interface IModuleAdapter
{
    /// <summary>The adapted output. <paramref name="input"/> is the module's input (a Linear's x [..., in], an Embedding's ids), <paramref name="baseOutput"/> its output.</summary>
    Tensor Forward(Tensor input, Tensor baseOutput, bool training);
}
