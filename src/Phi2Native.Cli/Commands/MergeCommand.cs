using System.CommandLine;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 merge`: folds a PEFT LoRA adapter into its base model (modules_to_save modules replaced) and writes a plain
/// HF-layout checkpoint, in the base's dtype unless --dtype says otherwise; config and tokenizer files are copied.
/// --out must be a new or empty folder, or, with --overwrite, one whose model files (and only those) are replaced.
/// </summary>
internal static class MergeCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Base model folder (default: the embedded tiny model)." };
        var adapter = new Option<string>("--adapter") { Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors).", Required = true };
        var outPath = new Option<string>("--out") { Description = "Output folder for the merged checkpoint.", Required = true };
        var dtype = new Option<string?>("--dtype") { Description = "Stored dtype: f32, f16 or bf16 (default: the base checkpoint's)." };
        var overwrite = new Option<bool>("--overwrite")
        {
            Description = "Replace the model in a non-empty --out: its weights (model.safetensors, the *.index.json files and the shards they name, " +
                          "pytorch_model.bin), config.json, generation_config.json and tokenizer files are removed first; nothing else is touched.",
        };
        var command = new Command("merge", "Merge a LoRA adapter into its base model and export an HF-layout checkpoint.") { model, adapter, outPath, dtype, overwrite };
        command.SetAction(result => CommandErrors.Guard(error, () => Run(
            result.GetValue(model), result.GetValue(adapter)!, result.GetValue(outPath)!, result.GetValue(dtype), result.GetValue(overwrite), output, error,
            Notices.Writer(result, error))));
        return command;
    }

    public static int Run(string? modelOption, string adapterDirectory, string outDirectory, string? dtypeText, bool overwrite, TextWriter output, TextWriter error,
        TextWriter notices)
    {
        DType? requested = dtypeText switch
        {
            null => null,
            "f32" or "float32" => DType.F32,
            "f16" or "float16" => DType.F16,
            "bf16" or "bfloat16" => DType.BF16,
            _ => throw new Phi2Exception($"--dtype \"{dtypeText}\" is not one of f32, f16, bf16"),
        };
        if (modelOption is not null && Path.GetFullPath(outDirectory) == Path.GetFullPath(modelOption))
            throw new Phi2Exception("--out must differ from --model: the merge never overwrites its base checkpoint");
        RequireWritableOut(outDirectory, overwrite);
        var stages = new StageProgress(error);
        // On the CPU: merging is one small product per adapted module, and --dtype here is the stored dtype, not a compute one.
        using var backend = BackendChoice.Open(DeviceRequest.Cpu, notices);
        var (phi, modelDirectory) = ModelSource.Load(modelOption, backend, stages, error, notices);
        using var modelScope = phi;
        var lora = PeftAdapter.Load(phi, adapterDirectory, warning => error.WriteLine($"warning: {warning}"));
        try
        {
            lora.Merge();
        }
        catch (Phi2Exception e)
        {
            throw new Phi2Exception($"{Path.Combine(adapterDirectory, PeftAdapter.WeightsFileName)}: {e.Message}", e);
        }
        var dtype = requested ?? phi.CheckpointDType ?? DType.F32;
        stages.Run($"writing {outDirectory} ({dtype})", _ =>
        {
            Phi2CheckpointWriter.Save(phi, outDirectory, dtype, modelDirectory);
            return 0;
        });
        output.WriteLine($"wrote {outDirectory}");
        return 0;
    }

    /// <summary>
    /// Refuses, before anything loads, an --out that is a file, or a folder with anything in it unless --overwrite
    /// (which then replaces only its model files, <see cref="Phi2CheckpointWriter.ModelFiles"/>: listed here so that an
    /// index that cannot be read fails now, not after the merge).
    /// </summary>
    private static void RequireWritableOut(string outDirectory, bool overwrite)
    {
        if (File.Exists(outDirectory)) throw new Phi2Exception($"--out '{outDirectory}' is a file; expected a folder (created if missing)");
        if (!Directory.Exists(outDirectory)) return;
        var entries = Directory.EnumerateFileSystemEntries(outDirectory).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        if (entries.Count == 0) return;
        if (!overwrite)
            throw new Phi2Exception($"--out '{outDirectory}' is not empty (it holds {string.Join(", ", entries.Take(5))}{(entries.Count > 5 ? $" and {entries.Count - 5} more" : "")}); " +
                                    "pass --overwrite to replace the model files in it, or choose a new or empty folder");
        Phi2CheckpointWriter.ModelFiles(outDirectory);
    }
}
