using System.Collections;

namespace Phi2Native.Models.Modules;

/// <summary>
/// Numbered children, as torch.nn.ModuleList: child i is named "{Name}.{i}" (Phi-2's <c>model.layers</c> holds
/// <c>model.layers.0</c> ...).
/// </summary>
/// <typeparam name="TModule">The children's type.</typeparam>
public sealed class ModuleList<TModule> : Module, IReadOnlyList<TModule> where TModule : Module
{
    private readonly TModule[] _modules;

    /// <summary>Builds <paramref name="count"/> children; <paramref name="create"/> gets each one's full name and index.</summary>
    public ModuleList(string name, int count, Func<string, int, TModule> create) : base(name) =>
        _modules = Enumerable.Range(0, count).Select(i => create(ChildName(i.ToString(System.Globalization.CultureInfo.InvariantCulture)), i)).ToArray();

    /// <inheritdoc/>
    public TModule this[int index] => _modules[index];

    /// <inheritdoc/>
    public int Count => _modules.Length;

    /// <inheritdoc/>
    public IEnumerator<TModule> GetEnumerator() => ((IEnumerable<TModule>)_modules).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => _modules;
}
