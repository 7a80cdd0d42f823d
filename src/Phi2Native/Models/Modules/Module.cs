using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>
/// A named part of a model. Names are the checkpoint's (e.g. "model.layers.0.self_attn.q_proj") and a
/// parameter's name is its module's name plus ".weight" or ".bias", exactly the HF key.
/// </summary>
public abstract class Module : IDisposable
{
    /// <summary>Creates a module with its full checkpoint name.</summary>
    protected Module(string name) => Name = name;

    /// <summary>The module's full checkpoint name.</summary>
    public string Name { get; }

    /// <summary>Training mode (dropout on); the model sets it on every module.</summary>
    public bool Training { get; set; }

    /// <summary>The module's own parameters and those of its children, in checkpoint order.</summary>
    public abstract IEnumerable<Tensor> Parameters();

    /// <summary>Freezes (false) or unfreezes (true) every parameter of the module.</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (var parameter in Parameters()) parameter.RequiresGrad = requiresGrad;
    }

    /// <summary>Frees the parameters (and their gradients).</summary>
    public void Dispose()
    {
        foreach (var parameter in Parameters()) parameter.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{GetType().Name} {Name}";

    /// <summary>Fetches a parameter "{Name}.{suffix}" of the given shape from the weight source.</summary>
    protected Tensor Take(WeightSource weights, string suffix, params int[] shape)
    {
        string name = $"{Name}.{suffix}";
        var tensor = weights(name, shape);
        if (!tensor.Shape.SequenceEqual(shape))
            throw new CheckpointException($"{name}: expected shape [{string.Join(", ", shape)}], got [{tensor.ShapeText}]");
        tensor.Name = name;
        return tensor;
    }
}

/// <summary>Supplies the tensor for a parameter, by HF name and expected shape (from a checkpoint, or random).</summary>
public delegate Tensor WeightSource(string name, int[] shape);
