using System.CommandLine;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 merge`: folds a PEFT LoRA adapter into its base model (modules_to_save modules replaced) and writes a plain
/// HF-layout checkpoint, in the base's dtype unless --dtype says otherwise; config and tokenizer files are copied.
/// </summary>
internal static class MergeCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Base model folder (default: the embedded tiny model)." };
        var adapter = new Option<string>("--adapter") { Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors).", Required = true };
        var outPath = new Option<string>("--out") { Description = "Output folder for the merged checkpoint.", Required = true };
        var dtype = new Option<string?>("--dtype") { Description = "Stored dtype: f32, f16 or bf16 (default: the base checkpoint's)." };
        var command = new Command("merge", "Merge a LoRA adapter into its base model and export an HF-layout checkpoint.") { model, adapter, outPath, dtype };
        command.SetAction(result => CommandErrors.Guard(error, () => Run(
            result.GetValue(model), result.GetValue(adapter)!, result.GetValue(outPath)!, result.GetValue(dtype), output, error)));
        return command;
    }

    public static int Run(string? modelOption, string adapterDirectory, string outDirectory, string? dtypeText, TextWriter output, TextWriter error)
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
        var stages = new StageProgress(error);
        // On the CPU: merging is one small product per adapted module, and --dtype here is the stored dtype, not a compute one.
        using var backend = BackendChoice.Open(DeviceRequest.Cpu, error);
        var (phi, modelDirectory) = ModelSource.Load(modelOption, backend, stages, error);
        using var modelScope = phi;
        var lora = PeftAdapter.Load(phi, adapterDirectory, warning => error.WriteLine($"warning: {warning}"));
        lora.Merge();
        var dtype = requested ?? phi.CheckpointDType ?? DType.F32;
        stages.Run($"writing {outDirectory} ({dtype})", _ =>
        {
            Phi2CheckpointWriter.Save(phi, outDirectory, dtype, modelDirectory);
            return 0;
        });
        output.WriteLine($"wrote {outDirectory}");
        return 0;
    }
}
