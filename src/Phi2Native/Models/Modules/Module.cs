using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>
/// A named part of a model, with named children, as a torch.nn.Module. A module's <see cref="Name"/> is its full dotted
/// path from the model, exactly the HF checkpoint key without the ".weight"/".bias" suffix
/// (<c>model.layers.3.self_attn.q_proj</c>); the model itself is the root, named "". A parameter's name is its module's
/// name plus ".weight" or ".bias", the HF key.
/// </summary>
/// <remarks>
/// The tree is the one description of a model's structure: LoRA selection (PEFT's target_modules, layers_to_transform
/// and modules_to_save), the training plan and <c>phi2 layers</c> walk <see cref="NamedModules"/> rather than lists of
/// their own.
/// </remarks>
public abstract class Module : IDisposable
{
    private bool _training;

    /// <summary>Creates a module with its full checkpoint name.</summary>
    protected Module(string name) => Name = name;

    /// <summary>The module's full checkpoint name ("" for the model itself).</summary>
    public string Name { get; }

    /// <summary>Training mode (dropout on). Setting it sets it on every module below too, as torch's <c>train()</c>.</summary>
    public bool Training
    {
        get => _training;
        set
        {
            foreach (var module in NamedModules()) module._training = value;
        }
    }

    /// <summary>
    /// This module, then every module below it, depth first in checkpoint order, as torch's <c>named_modules()</c>;
    /// each carries its full name in <see cref="Name"/>.
    /// </summary>
    public IEnumerable<Module> NamedModules()
    {
        yield return this;
        foreach (var child in Children())
            foreach (var module in child.NamedModules())
                yield return module;
    }

    /// <summary>
    /// Every parameter of this module and, unless <paramref name="recurse"/> is false, of the modules below it, with its
    /// HF key, in checkpoint order, as torch's <c>named_parameters()</c>.
    /// </summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters(bool recurse = true) =>
        (recurse ? NamedModules() : [this]).SelectMany(module => module.OwnParameters().Select(parameter => (parameter.Name!, parameter)));

    /// <summary>Every parameter of this module and, unless <paramref name="recurse"/> is false, of the modules below it, in checkpoint order.</summary>
    public IEnumerable<Tensor> Parameters(bool recurse = true) => NamedParameters(recurse).Select(named => named.Parameter);

    /// <summary>Freezes (false) or unfreezes (true) every parameter of the module and the modules below it.</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (var parameter in Parameters()) parameter.RequiresGrad = requiresGrad;
    }

    /// <summary>Frees every parameter (and its gradient) of the module and the modules below it.</summary>
    public void Dispose()
    {
        foreach (var parameter in Parameters()) parameter.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{GetType().Name} {Name}";

    /// <summary>The modules directly below this one, in checkpoint order (none for a leaf).</summary>
    protected virtual IEnumerable<Module> Children() => [];

    /// <summary>The parameters this module holds itself, not those of its children (torch: <c>recurse=False</c>).</summary>
    protected virtual IEnumerable<Tensor> OwnParameters() => [];

    /// <summary>The full name of a child called <paramref name="attribute"/> ("q_proj", "3"): "{Name}.{attribute}", or the attribute alone below the root.</summary>
    protected string ChildName(string attribute) => Name.Length == 0 ? attribute : $"{Name}.{attribute}";

    /// <summary>Fetches a parameter "{Name}.{suffix}" of the given shape from the weight source.</summary>
    protected Tensor Take(WeightSource weights, string suffix, params int[] shape)
    {
        string name = ChildName(suffix);
        var tensor = weights(name, shape);
        if (!tensor.Shape.SequenceEqual(shape))
            throw new CheckpointException($"{name}: expected shape [{string.Join(", ", shape)}], got [{tensor.ShapeText}]");
        tensor.Name = name;
        return tensor;
    }
}

/// <summary>Supplies the tensor for a parameter, by HF name and expected shape (from a checkpoint, random, or shape-only).</summary>
public delegate Tensor WeightSource(string name, int[] shape);
