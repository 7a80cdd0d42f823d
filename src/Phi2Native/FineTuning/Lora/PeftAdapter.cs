using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// PEFT adapter folders: adapter_config.json plus adapter_model.safetensors (fp32, PEFT's key names), so adapters
/// move between this engine and HF PEFT in both directions.
/// </summary>
public static class PeftAdapter
{
    /// <summary>The weights file PEFT writes.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>
    /// Writes <paramref name="lora"/>'s configuration and every trainable tensor to <paramref name="directory"/> (created
    /// if needed); each file is written to a temporary name and renamed, so an existing adapter is never half-overwritten.
    /// </summary>
    public static void Save(LoraModel lora, string directory, string? baseModelNameOrPath = null)
    {
        Directory.CreateDirectory(directory);
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var parameter in lora.TrainableParameters())
            writer.AddSingle(LoraModel.PeftKey(parameter), parameter.ToSingleArray(), Array.ConvertAll(parameter.Shape.ToArray(), d => (long)d));
        writer.Save(Path.Combine(directory, WeightsFileName));
        string configPath = Path.Combine(directory, PeftAdapterConfig.FileName), temporary = configPath + ".tmp";
        File.WriteAllText(temporary, PeftAdapterConfig.ToJson(lora.Config, baseModelNameOrPath));
        File.Move(temporary, configPath, overwrite: true);
    }

    /// <summary>
    /// Reads a PEFT adapter folder and attaches it to <paramref name="model"/>. Tensors the engine does not use are
    /// reported through <paramref name="warn"/>, never dropped silently; ones that would change results are errors.
    /// </summary>
    /// <exception cref="Phi2Exception">The folder, config or weights are missing or malformed, or the tensors do not fit the model (all listed).</exception>
    public static LoraModel Load(Phi2Model model, string directory, Action<string>? warn = null)
    {
        if (PathChecks.FolderProblem(directory) is { } problem)
            throw new Phi2Exception($"adapter folder '{directory}' {problem}; pass a folder holding adapter_config.json and {WeightsFileName}");
        var config = PeftAdapterConfig.Read(Path.Combine(directory, PeftAdapterConfig.FileName));
        string weightsPath = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(weightsPath))
            throw new Phi2Exception(File.Exists(Path.Combine(directory, "adapter_model.bin"))
                ? $"{directory}: only adapter_model.bin is there; save the adapter with safe_serialization (safetensors)"
                : $"{weightsPath}: no such file");
        using var file = SafeTensorsFile.Open(weightsPath);
        LoraModel lora;
        try
        {
            lora = LoraModel.Create(model, config);
        }
        catch (Phi2Exception e)
        {
            throw new Phi2Exception($"{directory}: the adapter does not fit this model: {e.Message}", e);
        }
        try
        {
            Fill(lora, file, weightsPath, warn);
            return lora;
        }
        catch
        {
            lora.Dispose();
            throw;
        }
    }

    private static void Fill(LoraModel lora, SafeTensorsFile file, string weightsPath, Action<string>? warn)
    {
        var problems = new List<string>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var parameter in lora.TrainableParameters())
        {
            string key = LoraModel.PeftKey(parameter);
            if (!file.TryGet(key, out var info)) { problems.Add($"  missing: {key} [{parameter.ShapeText}]"); continue; }
            used.Add(key);
            if (!info.Shape.Select(d => (int)d).SequenceEqual(parameter.Shape.ToArray()))
            {
                problems.Add($"  mis-shaped: {key}: the model needs [{parameter.ShapeText}], the file has {info.ShapeText}");
                continue;
            }
            if (info.DType is not { } dtype || !dtype.IsFloatingPoint()) { problems.Add($"  {key}: dtype {info.DTypeName} is not floating point"); continue; }
            using var values = parameter.Backend.FromBytes(file.GetBytes(key), dtype, parameter.Shape, parameter.DType);
            parameter.Backend.Copy(values, parameter);
        }
        var unused = file.Tensors.Select(t => t.Name).Where(name => !used.Contains(name)).ToList();
        // PEFT's save_embedding_layers writes whole base embeddings that replace the model's on load: ignoring them would change results.
        foreach (var name in unused.Where(n => n.Contains(".base_layer.", StringComparison.Ordinal)))
            problems.Add($"  {name}: a saved base layer (PEFT save_embedding_layers) is not supported; save the adapter with save_embedding_layers=False or merge it");
        if (problems.Count > 0)
            throw new Phi2Exception($"{weightsPath} does not match its adapter_config.json and this model:\n{string.Join("\n", problems)}");
        if (unused.Count > 0) warn?.Invoke($"{weightsPath}: {unused.Count} tensor(s) this adapter does not use: {string.Join(", ", unused)}");
    }
}
