using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>y = x W^T + b. weight [out, in] as checkpoints store it; bias [out].</summary>
public sealed class Linear : Module
{
    /// <summary>Loads the module's parameters from <paramref name="weights"/>.</summary>
    public Linear(string name, int inFeatures, int outFeatures, WeightSource weights, bool hasBias = true) : base(name)
    {
        Weight = Take(weights, "weight", outFeatures, inFeatures);
        Bias = hasBias ? Take(weights, "bias", outFeatures) : null;
    }

    /// <summary>Over parameters already loaded (row-block views of a fused weight, <see cref="LinearStack"/>), named by the caller.</summary>
    internal Linear(string name, Tensor weight, Tensor? bias) : base(name) => (Weight, Bias) = (weight, bias);

    /// <summary>[out, in].</summary>
    public Tensor Weight { get; }

    /// <summary>[out], or null.</summary>
    public Tensor? Bias { get; }

    /// <summary>Input features.</summary>
    public int InFeatures => Weight.Size(1);

    /// <summary>Output features.</summary>
    public int OutFeatures => Weight.Size(0);

    /// <summary>An adapter (LoRA) that changes this module's output, or null.</summary>
    public IModuleAdapter? Adapter { get; set; }

    /// <summary>x [..., in] -> [..., out].</summary>
    public Tensor Forward(Tensor x)
    {
        using var profile = ProfileScope.Module(Name);
        var y = LinearOp.Apply(x, Weight, Bias);
        return Adapter is null ? y : Adapter.Forward(x, y, Training);
    }

    /// <summary>
    /// Inference only, with no adapter: x [..., in] -> x W^T + b + <paramref name="residual"/> [..., out], the residual
    /// added by the GEMM's own accumulation (LinearOp.ForwardAdding); <paramref name="inPlace"/> writes into the residual.
    /// </summary>
    internal Tensor ForwardAdding(Tensor x, Tensor residual, bool inPlace)
    {
        if (Adapter is not null) throw new InvalidOperationException($"{Name}: an adapted Linear adds its adapter's output; a residual cannot go in its GEMM");
        using var profile = ProfileScope.Module(Name);
        return LinearOp.ForwardAdding(x, Weight, Bias, residual, inPlace);
    }

    /// <inheritdoc/>
    protected override IEnumerable<Tensor> OwnParameters() => Bias is null ? [Weight] : [Weight, Bias];
}
