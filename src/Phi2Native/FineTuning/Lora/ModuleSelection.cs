using System.Text.RegularExpressions;
using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;

namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// PEFT's rules for which modules a configuration touches, on module names relative to the base model, and the walk of
/// a model's module tree (<see cref="Module.NamedModules"/>) that applies them: what LoRA attaches and what the
/// training plan shows come from the same walk.
/// </summary>
public static partial class ModuleSelection
{
    /// <summary>
    /// PEFT's check_target_module_exists: a regex string must match the whole name; a list entry matches a name equal
    /// to it (taken regardless of layers) or a name ending in "." + it, which with layers_to_transform must also sit
    /// in a listed layer.
    /// </summary>
    public static bool IsTarget(LoraConfig config, string moduleName)
    {
        if (config.TargetModulesRegex is { } pattern) return Regex.IsMatch(moduleName, $"^(?:{pattern})$");
        if (config.TargetModules.Contains(moduleName)) return true;
        if (!config.TargetModules.Any(target => moduleName.EndsWith("." + target, StringComparison.Ordinal))) return false;
        if (config.LayersToTransform is not { Count: > 0 } layers) return true;
        // PEFT's default layer pattern: re.match(r".*\.[^.]*\.(\d+)\.", name), the last ".<word>.<digits>." in it.
        var match = LayerIndexPattern().Match(moduleName);
        return match.Success && layers.Contains(int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>PEFT's modules_to_save rule: the module's name ends with an entry (no dot needed).</summary>
    public static bool IsModuleToSave(LoraConfig config, string moduleName) =>
        config.ModulesToSave.Any(entry => moduleName.EndsWith(entry, StringComparison.Ordinal));

    /// <summary>
    /// Every module of <paramref name="model"/> that holds parameters, in checkpoint order, with how it trains: in full
    /// when it or a module above it is a module to save (PEFT wraps the named module whole, so an entry such as
    /// "model.layers.3.mlp" trains every module inside it); else with LoRA when it is a Linear or Embedding that
    /// target_modules selects; else frozen.
    /// </summary>
    /// <exception cref="Phi2Exception">An entry names no module of the model, a target names a module LoRA cannot adapt,
    /// a layer index is out of range, or nothing is selected; the message lists what is valid.</exception>
    internal static IReadOnlyList<(Module Module, ModuleTraining Training)> Resolve(Phi2Model model, LoraConfig config)
    {
        var modules = model.NamedModules().ToList();
        CheckNames(model, modules, config);
        var saved = modules.Where(m => IsModuleToSave(config, m.Name)).Select(m => m.Name).ToList();
        var selection = new List<(Module, ModuleTraining)>();
        foreach (var module in modules.Where(HoldsParameters))
        {
            var training = saved.Any(name => IsWithin(module.Name, name)) ? ModuleTraining.Full
                : module is Linear or Embedding && IsTarget(config, module.Name) ? ModuleTraining.Lora
                : ModuleTraining.Frozen;
            selection.Add((module, training));
        }
        if (selection.All(s => s.Item2 == ModuleTraining.Frozen))
            throw new Phi2Exception("the LoRA configuration selects no module of this model (check target_modules against layers_to_transform)");
        return selection;
    }

    /// <summary>Every module of <paramref name="model"/> that holds parameters, frozen: the selection of no configuration.</summary>
    internal static IReadOnlyList<(Module Module, ModuleTraining Training)> Frozen(Phi2Model model) =>
        model.NamedModules().Where(HoldsParameters).Select(m => (m, ModuleTraining.Frozen)).ToList();

    private static bool HoldsParameters(Module module) => module.Parameters(recurse: false).Any();

    /// <summary>Whether the module named <paramref name="name"/> is <paramref name="ancestor"/> or lies below it ("" is the model itself).</summary>
    private static bool IsWithin(string name, string ancestor) =>
        ancestor.Length == 0 || name == ancestor || name.StartsWith(ancestor + ".", StringComparison.Ordinal);

    private static void CheckNames(Phi2Model model, IReadOnlyList<Module> modules, LoraConfig config)
    {
        // What LoRA can adapt, by the last part of its name in tree order ("embed_tokens, q_proj, ..."), then the leaves
        // only full training reaches; both read off the tree.
        var adaptable = modules.Where(m => m is Linear or Embedding).Select(m => LastPart(m.Name)).Distinct().ToList();
        var fullOnly = modules.Where(m => HoldsParameters(m) && m is not (Linear or Embedding)).Select(m => LastPart(m.Name)).Distinct();
        string example = modules.First(m => m is Linear).Name;
        string valid = $"{string.Join(", ", adaptable)}, or a full module name such as {example}";
        foreach (var entry in config.TargetModules)
        {
            var matched = modules.Where(m => m.Name == entry || m.Name.EndsWith("." + entry, StringComparison.Ordinal)).ToList();
            if (matched.Count == 0) throw new Phi2Exception($"target module \"{entry}\" names no module of this model; valid: {valid}");
            if (matched.FirstOrDefault(m => m is not (Linear or Embedding)) is { } wrong)
                throw new Phi2Exception($"target module \"{entry}\" matches {wrong.Name}, which LoRA cannot adapt: only Linear and Embedding modules take adapters ({valid}); " +
                                        "train other modules in full with modules_to_save");
        }
        foreach (var entry in config.ModulesToSave)
            if (!modules.Any(m => m.Name.EndsWith(entry, StringComparison.Ordinal)))
                throw new Phi2Exception($"module to save \"{entry}\" names no module of this model; valid: {string.Join(", ", fullOnly)}, {valid}");
        if (config.LayersToTransform is { } layers)
            foreach (int index in layers)
                if (index < 0 || index >= model.Layers.Count)
                    throw new Phi2Exception($"layer {index} in layers_to_transform does not exist: this model has layers 0-{model.Layers.Count - 1}");
    }

    private static string LastPart(string name) => name[(name.LastIndexOf('.') + 1)..];

    [GeneratedRegex(@"^.*\.[^.]*\.(\d+)\.")]
    private static partial Regex LayerIndexPattern();
}
