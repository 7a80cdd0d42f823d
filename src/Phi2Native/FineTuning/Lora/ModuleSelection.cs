using System.Text.RegularExpressions;

namespace Phi2Native.FineTuning.Lora;

/// <summary>PEFT's rules for which modules a configuration touches, on module names relative to the base model.</summary>
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

    [GeneratedRegex(@"^.*\.[^.]*\.(\d+)\.")]
    private static partial Regex LayerIndexPattern();
}
