using System.CommandLine;
using Phi2Native.Hosting;
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
        // Refused before anything loads; the merge checks it again.
        AdapterMerge.CheckOutput(outDirectory, modelOption, overwrite);
        // On the CPU: merging is one small product per adapted module, and --dtype here is the stored dtype, not a compute one.
        notices.WriteLine($"device: cpu (the merge computes one small product per adapted module), f32");
        Notices.Model(modelOption, notices);
        var dtype = new StageProgress(error).Run($"merging {adapterDirectory} into {ModelSource.DisplayName(modelOption)}, writing {outDirectory}", progress => AdapterMerge.Run(new AdapterMergeOptions
        {
            ModelDirectory = modelOption, AdapterDirectory = adapterDirectory, OutputDirectory = outDirectory, DType = requested, Overwrite = overwrite,
            Warn = warning => error.WriteLine($"warning: {warning}"), LoadProgress = progress,
        }));
        output.WriteLine($"wrote {outDirectory} ({ComputeDTypes.Name(dtype)})");
        return 0;
    }
}
