using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Modules;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary><c>model.layers.{i}.mlp</c>: fc2(gelu_new(fc1(x))), fc1 [I, C] and fc2 [C, I] with biases.</summary>
public sealed class Phi2Mlp : Module
{
    internal Phi2Mlp(string name, Phi2Config config, WeightSource weights) : base(name)
    {
        Fc1 = new Linear(ChildName("fc1"), config.HiddenSize, config.IntermediateSize, weights);
        Fc2 = new Linear(ChildName("fc2"), config.IntermediateSize, config.HiddenSize, weights);
    }

    /// <summary>[I, C].</summary>
    public Linear Fc1 { get; }

    /// <summary>[C, I].</summary>
    public Linear Fc2 { get; }

    /// <summary>x [B, T, C] -> [B, T, C], before the residual dropout.</summary>
    public Tensor Forward(Tensor x)
    {
        using var profile = ProfileScope.Module(Name);
        return Fc2.Forward(Fc1AndGelu(x));
    }

    /// <summary>Inference, no adapter on fc2: x [B, T, C] -> <paramref name="residual"/> + fc2(gelu_new(fc1(x))), written into <paramref name="residual"/> by fc2's GEMM (beta 1).</summary>
    internal Tensor ForwardAdding(Tensor x, Tensor residual)
    {
        using var profile = ProfileScope.Module(Name);
        return Fc2.ForwardAdding(Fc1AndGelu(x), residual, inPlace: true);
    }

    /// <summary>
    /// gelu_new(fc1(x)), one fused op: fc1's bias and gelu_new in its GEMM's epilogue (or one pass after it); with a LoRA
    /// adapter on fc1 (the low-rank product added before gelu_new) LoraLinearGeluOp: the base GEMM, lora_down and lora_up
    /// with gelu_new in its epilogue. A merged adapter is folded into the weight and detached; any other adapter keeps the
    /// unfused path, fc1 with its adapter then GeluNew.
    /// </summary>
    private Tensor Fc1AndGelu(Tensor x)
    {
        if (Fc1.Bias is null || Fc1.Adapter is not (null or LoraLinear)) return GeluNewOp.Apply(Fc1.Forward(x));
        using var profile = ProfileScope.Module(Fc1.Name);
        return Fc1.Adapter is LoraLinear lora
            ? LoraLinearGeluOp.Apply(x, Fc1.Weight, Fc1.Bias, lora.A, lora.B, lora.Branch(Fc1.Training))
            : LinearGeluOp.Apply(x, Fc1.Weight, Fc1.Bias);
    }

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => [Fc1, Fc2];
}
