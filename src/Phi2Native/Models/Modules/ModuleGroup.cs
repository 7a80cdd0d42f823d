namespace Phi2Native.Models.Modules;

/// <summary>
/// A module that only holds named children, whose forward its parent runs: Phi-2's <c>model</c> (HF's PhiModel:
/// embed_tokens, layers, final_layernorm). It exists so that the tree, and every name in it, is the checkpoint's.
/// </summary>
internal sealed class ModuleGroup : Module
{
    private readonly Module[] _children;

    /// <summary>Groups <paramref name="children"/>, each of which must be named "{name}.{attribute}".</summary>
    /// <exception cref="ArgumentException">A child's name is not directly below <paramref name="name"/>.</exception>
    public ModuleGroup(string name, params Module[] children) : base(name)
    {
        foreach (var child in children)
            if (!child.Name.StartsWith(name + ".", StringComparison.Ordinal) || child.Name.IndexOf('.', name.Length + 1) >= 0)
                throw new ArgumentException($"{child.Name} is not a child of {name}", nameof(children));
        _children = children;
    }

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => _children;
}
