using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>What <see cref="AdapterMerge.Run"/> merges and where it writes.</summary>
public sealed record AdapterMergeOptions
{
    /// <summary>The base model folder; null for the embedded model.</summary>
    public string? ModelDirectory { get; init; }

    /// <summary>The PEFT adapter folder (adapter_config.json + adapter_model.safetensors).</summary>
    public required string AdapterDirectory { get; init; }

    /// <summary>The folder the merged checkpoint goes into: new or empty, or any folder with <see cref="Overwrite"/>.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>The stored dtype (F32, F16 or BF16); null keeps the base checkpoint's.</summary>
    public DType? DType { get; init; }

    /// <summary>
    /// Reuse a non-empty <see cref="OutputDirectory"/>: exactly its model files (<see cref="Phi2CheckpointWriter.ModelFiles"/>)
    /// are replaced; every other file and folder stays.
    /// </summary>
    public bool Overwrite { get; init; }

    /// <summary>Receives non-fatal remarks while loading.</summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Receives the fraction of the base loaded, from 0 to 1.</summary>
    public IProgress<double>? LoadProgress { get; init; }
}

/// <summary>
/// Folds a PEFT LoRA adapter into its base (modules_to_save modules replaced) and writes a plain HF-layout checkpoint,
/// config and tokenizer files copied from the base: what <c>phi2 merge</c> does. It computes on the CPU: one small
/// product per adapted module.
/// </summary>
public static class AdapterMerge
{
    /// <summary>
    /// Refuses, before anything loads, an output that is a file, the base folder itself, or a folder with anything in it
    /// unless <paramref name="overwrite"/> (then its model files are listed now, so that an index that cannot be read
    /// fails before the merge, not after).
    /// </summary>
    /// <exception cref="Phi2Exception">The output cannot be written as asked (the message says why and what to do).</exception>
    public static void CheckOutput(string outputDirectory, string? modelDirectory, bool overwrite)
    {
        ArgumentNullException.ThrowIfNull(outputDirectory);
        if (modelDirectory is not null && Path.GetFullPath(outputDirectory) == Path.GetFullPath(modelDirectory))
            throw new Phi2Exception("--out must differ from --model: the merge never overwrites its base checkpoint");
        if (File.Exists(outputDirectory)) throw new Phi2Exception($"--out '{outputDirectory}' is a file; expected a folder (created if missing)");
        if (!Directory.Exists(outputDirectory)) return;
        var entries = Directory.EnumerateFileSystemEntries(outputDirectory).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        if (entries.Count == 0) return;
        if (!overwrite)
            throw new Phi2Exception($"--out '{outputDirectory}' is not empty (it holds {string.Join(", ", entries.Take(5))}{(entries.Count > 5 ? $" and {entries.Count - 5} more" : "")}); " +
                                    "pass --overwrite to replace the model files in it, or choose a new or empty folder");
        Phi2CheckpointWriter.ModelFiles(outputDirectory);
    }

    /// <summary>Merges and writes as <paramref name="options"/> say; returns the dtype written.</summary>
    /// <exception cref="Phi2Exception">
    /// The output is refused (<see cref="CheckOutput"/>), a folder or file is missing or malformed, the adapter does not
    /// fit the base, or it holds NaN or an infinity (the message names the file and tensor).
    /// </exception>
    public static DType Run(AdapterMergeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.DType is { } requested && requested is not (DType.F32 or DType.F16 or DType.BF16))
            throw new Phi2Exception($"--dtype {ComputeDTypes.Name(requested)} is not a checkpoint dtype; use f32, f16 or bf16");
        CheckOutput(options.OutputDirectory, options.ModelDirectory, options.Overwrite);
        // The base's config and tokenizer files are copied, so the embedded model is read as the folder it would be.
        string baseFolder = ModelSource.AsFolder(options.ModelDirectory, out var cleanUp);
        try
        {
            using var model = Phi2Checkpoint.Load(baseFolder, CpuBackend.Default, Tensors.DType.F32, options.Warn, options.LoadProgress);
            var lora = PeftAdapter.Load(model, options.AdapterDirectory, options.Warn);
            try
            {
                lora.Merge();
            }
            catch (Phi2Exception e) when (e is not EngineFaultException)
            {
                throw new Phi2Exception($"{Path.Combine(options.AdapterDirectory, PeftAdapter.WeightsFileName)}: {e.Message}", e);
            }
            var dtype = options.DType ?? model.CheckpointDType ?? Tensors.DType.F32;
            Phi2CheckpointWriter.Save(model, options.OutputDirectory, dtype, baseFolder);
            return dtype;
        }
        finally
        {
            cleanUp();
        }
    }
}
