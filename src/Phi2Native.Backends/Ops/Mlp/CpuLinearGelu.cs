using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Mlp;

/// <summary>
/// <see cref="LinearGeluOp"/> on the CPU backend, the reference: exactly <see cref="LinearOp"/> then <see cref="GeluNewOp"/>
/// (the same CpuLinear and CpuGelu calls on the same values), so every result is bit-equal to the unfused ops' and the
/// golden tests of the model hold.
/// </summary>
internal static class CpuLinearGelu
{
    /// <summary>y = gelu_new(x W^T + b), and h = x W^T + b when <paramref name="savePre"/> (else freed), the contract checked.</summary>
    public static (Tensor Y, Tensor? Pre) Forward(CpuBackend cpu, Tensor x, Tensor weight, Tensor bias, bool savePre, int rows, int inFeatures, int outFeatures)
    {
        var h = CpuLinear.Forward(cpu, x, weight, bias, rows, inFeatures, outFeatures);
        var y = CpuGelu.Forward(cpu, h);
        if (savePre) return (y, h);
        h.Dispose();
        return (y, null);
    }

    /// <summary>dh = dY * gelu_new'(pre), then Linear's backward from dh, the contract checked.</summary>
    public static void Backward(CpuBackend cpu, Tensor dOutput, Tensor x, Tensor weight, Tensor pre, Tensor? dx, Tensor? dWeight, Tensor? dBias,
        int rows, int inFeatures, int outFeatures)
    {
        using var dh = cpu.Allocate(pre.Shape, pre.DType);
        CpuGelu.Backward(dOutput, pre, dh);
        CpuLinear.Backward(dh, x, weight, dx, dWeight, dBias, rows, inFeatures, outFeatures);
    }
}
