using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Activation;
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
        return Fc2.Forward(GeluNewOp.Apply(Fc1.Forward(x)));
    }

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => [Fc1, Fc2];
}
