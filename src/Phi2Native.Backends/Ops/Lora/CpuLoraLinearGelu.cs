using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// <see cref="LoraLinearGeluOp"/> on the CPU backend, the reference: exactly Linear, Lora and GeluNew (the same CpuLinear,
/// CpuLora and CpuGelu calls on the same values), and their backward in the autograd's order (gelu_new', the branch, then
/// the base's dx added to the branch's), so every result is bit-equal to the unfused ops'.
/// </summary>
internal static class CpuLoraLinearGelu
{
    /// <summary><see cref="LoraLinearGeluOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static (Tensor Y, Tensor? Pre, Tensor U) Forward(CpuBackend cpu, Tensor x, Tensor weight, Tensor bias, Tensor a, Tensor b, LoraBranch branch,
        LoraShape shape, bool savePre)
    {
        using var h = CpuLinear.Forward(cpu, x, weight, bias, shape.Rows, shape.In, shape.Out);
        var pre = CpuLora.Forward(cpu, x, h, a, b, branch, shape, out var u);
        var y = CpuGelu.Forward(cpu, pre);
        if (savePre) return (y, pre, u);
        pre.Dispose();
        return (y, null, u);
    }

    /// <summary><see cref="LoraLinearGeluOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(CpuBackend cpu, Tensor dOutput, Tensor x, Tensor weight, Tensor a, Tensor b, Tensor u, Tensor pre, LoraBranch branch,
        LoraShape shape, Tensor? dx, Tensor? dWeight, Tensor? dBias, Tensor? dA, Tensor? dB, bool accumulateDx,
        bool accumulateA = true, bool accumulateB = true)
    {
        using var dh = cpu.Allocate(pre.Shape, pre.DType);
        CpuGelu.Backward(dOutput, pre, dh);
        CpuLora.Backward(cpu, dh, x, a, b, u, branch, shape, dx, dA, dB, accumulateDx, accumulateA, accumulateB);
        CpuLinear.Backward(dh, x, weight, dx, dWeight, dBias, shape.Rows, shape.In, shape.Out, accumulateDx: dx is not null);
    }
}
