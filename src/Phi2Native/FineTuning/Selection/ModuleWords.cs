using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;

namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// The module names a person may give (<c>q_proj</c>, <c>mlp.fc1</c>, <c>attention</c>, <c>mlp</c>, <c>embed_tokens</c>,
/// <c>model.final_layernorm</c>, ...) and the modules each stands for, read off Phi-2's module tree (a one-layer model
/// built without memory: every layer has the same modules).
/// </summary>
/// <remarks>
/// Inside a layer a word is a leaf's last name part ("q_proj"), its path in the layer ("self_attn.q_proj") or a
/// composite's path ("self_attn", "mlp": its leaves); outside the layers it is a module's last name part or its full
/// name ("embed_tokens", "model.embed_tokens"). The one word not in the tree is "attention", the everyday name of self_attn.
/// </remarks>
internal static class ModuleWords
{
    /// <summary>A module a word stands for.</summary>
    /// <param name="PeftName">What PEFT's target_modules / modules_to_save entry for it is: the last name part inside
    /// the layers ("fc1", so layers_to_transform applies), the full name outside them ("model.embed_tokens").</param>
    /// <param name="PathInLayer">Its path inside a decoder layer ("mlp.fc1"), or null for a module outside the layers.</param>
    /// <param name="TakesLora">A Linear or Embedding, which LoRA can adapt (LayerNorms train in full only).</param>
    internal readonly record struct Meaning(string PeftName, string? PathInLayer, bool TakesLora);

    private static readonly Dictionary<string, string> Synonyms = new(StringComparer.Ordinal) { ["attention"] = "self_attn" };

    /// <summary>Every word, in tree order, with the modules it stands for.</summary>
    public static IReadOnlyDictionary<string, Meaning[]> All { get; }

    /// <summary>The name of the layers' list, "model.layers": layer i is "{LayersName}.{i}".</summary>
    public static string LayersName { get; }

    static ModuleWords()
    {
        using var model = Phi2Model.CreateShapeOnly(Phi2Config.Tiny with { NumHiddenLayers = 1 });
        All = Read(model);
        LayersName = model.Layers[0].Name[..model.Layers[0].Name.LastIndexOf('.')];
    }

    private static Dictionary<string, Meaning[]> Read(Phi2Model model)
    {
        var layer = model.Layers[0];
        var words = new Dictionary<string, Meaning[]>(StringComparer.Ordinal);
        void Add(string word, Meaning[] meaning) => words.TryAdd(word, meaning);
        string InLayer(Module module) => module.Name[(layer.Name.Length + 1)..];
        foreach (var module in model.NamedModules().Where(m => m != model))
        {
            bool leaf = module.Parameters(recurse: false).Any();
            if (module.Name.StartsWith(layer.Name + ".", StringComparison.Ordinal))
            {
                var leaves = module.NamedModules().Where(m => m.Parameters(recurse: false).Any())
                    .Select(m => new Meaning(LastPart(m.Name), InLayer(m), m is Linear or Embedding)).ToArray();
                if (leaf) Add(LastPart(module.Name), leaves);
                Add(InLayer(module), leaves);
            }
            else if (leaf)
            {
                Meaning[] meaning = [new(module.Name, null, module is Linear or Embedding)];
                Add(LastPart(module.Name), meaning);
                Add(module.Name, meaning);
            }
        }
        foreach (var (synonym, word) in Synonyms) Add(synonym, words[word]);
        return words;
    }

    private static string LastPart(string name) => name[(name.LastIndexOf('.') + 1)..];
}
