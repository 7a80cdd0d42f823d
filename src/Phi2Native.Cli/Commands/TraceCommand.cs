using System.CommandLine;
using Phi2Native.Autograd;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 trace`: one evaluation-mode forward over the given ids, or a text tokenized with the model folder's tokenizer
/// (batch 1), and, with --grads, one backward of the causal-LM loss; writes logits [T, V], loss [1] and
/// grad.&lt;HF name&gt; (all F32) to a safetensors file.
/// </summary>
internal static class TraceCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Model folder: config.json plus model.safetensors (or sharded, or phi-msft); default: the embedded tiny model." };
        var ids = new Option<string?>("--ids") { Description = "The sequence as comma-separated token ids, at least 2 (e.g. 1,2,3); or give --text." };
        var text = new Option<string?>("--text") { Description = "The sequence as text, tokenized with the model folder's tokenizer (the embedded one without --model); or give --ids." };
        var outPath = new Option<string>("--out") { Description = "Output .safetensors file.", Required = true };
        var grads = new Option<bool>("--grads") { Description = "Also back-propagate the loss and write grad.<name> for every parameter (with --adapter: for every adapter tensor, under its PEFT key)." };
        var adapter = new Option<string?>("--adapter") { Description = "A PEFT LoRA adapter folder to apply first." };
        var device = new DeviceOptions(DeviceOptions.InferenceDTypeDescription);
        var command = new Command("trace", "Write the logits, loss and (with --grads) every parameter's gradient for one sequence.")
        {
            model, ids, text, outPath, grads, adapter,
        };
        foreach (var option in device.All) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () => Run(
            result.GetValue(model), result.GetValue(ids), result.GetValue(text), result.GetValue(outPath)!, result.GetValue(grads), result.GetValue(adapter),
            device.Read(result), output, error, Notices.Writer(result, error))));
        return command;
    }

    public static int Run(string? modelOption, string? idsText, string? text, string outPath, bool withGrads, string? adapterDirectory, DeviceRequest device,
        TextWriter output, TextWriter error, TextWriter notices)
    {
        RequireOutputFile(outPath);
        if ((idsText is null) == (text is null))
            throw new ModelInputException(idsText is null
                ? "give the sequence as --ids 1,2,3 or as --text \"some text\" (one of them is required)"
                : "give the sequence as --ids or as --text, not both");
        int[]? tokenIds = idsText is null ? null : ParseIds(idsText);   // bad ids fail before the model loads
        // Progress and remarks go to standard error: standard output carries only the result line.
        var stages = new StageProgress(error);
        // Declared before the model, so the model's device memory is freed before the backend goes.
        using var backend = BackendChoice.Open(device, notices, withAdapter: adapterDirectory is not null);
        var (phi, directory) = ModelSource.Load(modelOption, backend, stages, error, notices);
        using var modelScope = phi;
        phi.Training = false;
        // With an adapter, exactly its trainable tensors get gradients (the base stays frozen); without, every parameter.
        using var lora = adapterDirectory is null ? null : PeftAdapter.Load(phi, adapterDirectory, warning => error.WriteLine($"warning: {warning}"));
        tokenIds ??= Tokenize(text!, directory, adapterDirectory, error);
        if (withGrads && lora is null) phi.SetRequiresGrad(true);
        var trainable = lora?.TrainableParameters().ToList() ?? phi.Parameters().ToList();
        var writer = new SafeTensorsWriter();
        writer.Metadata["producer"] = "phi2 trace";
        writer.Metadata["model"] = ModelSource.BaseName(modelOption);
        using (var scope = TensorScope.Begin())
        using (var tape = withGrads ? GradientTape.Begin() : null)
        {
            var (logits, loss) = stages.Run(withGrads ? "forward and backward" : "forward", _ =>
            {
                var logits = phi.Forward(phi.CreateInputIds(tokenIds));
                var loss = phi.CausalLanguageModelLoss(logits, tokenIds);
                tape?.Backward(loss);
                return (logits, loss);
            });
            writer.AddSingle("logits", logits.ToSingleArray(), [tokenIds.Length, phi.Config.VocabSize]);
            writer.AddSingle("loss", loss.ToSingleArray(), [1]);
            if (withGrads)
                foreach (var parameter in trainable)
                {
                    // A parameter no path reached (e.g. embedding rows of ids not in the input stay 0) still gets its zero gradient.
                    float[] gradient = parameter.Grad?.ToSingleArray() ?? new float[parameter.ElementCount];
                    string name = lora is null ? parameter.Name! : LoraModel.PeftKey(parameter);
                    writer.AddSingle($"grad.{name}", gradient, Array.ConvertAll(parameter.Shape.ToArray(), d => (long)d));
                }
            error.WriteLine($"loss {loss.Item():F6} over {tokenIds.Length} ids; {backend.Summary}");
        }
        writer.Save(outPath);
        output.WriteLine($"wrote {outPath}");
        return 0;
    }

    /// <summary>
    /// --text as ids: the model folder's tokenizer (a folder without tokenizer files falls back to GPT-2's, with a
    /// warning), with an adapter's added tokens; the ids go to standard error so a run can be repeated with --ids.
    /// </summary>
    private static int[] Tokenize(string text, string modelDirectory, string? adapterDirectory, TextWriter error)
    {
        var tokenizer = TextTokenizer.FromModelFolder(modelDirectory, warning => error.WriteLine($"warning: {warning}"));
        if (adapterDirectory is not null) NewTokens.Apply(tokenizer, adapterDirectory);
        int[] ids = tokenizer.Encode(text);
        if (ids.Length < 2)
            throw new ModelInputException($"--text: \"{text}\" is {ids.Length} token(s); the causal-LM loss needs at least 2");
        error.WriteLine($"--text is {ids.Length} ids: {string.Join(",", ids)}");
        return ids;
    }

    // Checked before the model loads, so a typo in --out costs no forward pass.
    private static void RequireOutputFile(string outPath)
    {
        if (Directory.Exists(outPath)) throw new Phi2Exception($"--out '{outPath}' is a folder; expected a .safetensors file to write");
        string folder = Path.GetDirectoryName(Path.GetFullPath(outPath))!;
        if (!Directory.Exists(folder))
            throw new Phi2Exception(File.Exists(folder)
                ? $"--out '{outPath}': '{folder}' is a file, not a folder"
                : $"--out '{outPath}': the folder '{folder}' does not exist; create it first");
    }

    /// <summary>Comma-separated ids; each item that is not an integer is named.</summary>
    public static int[] ParseIds(string text, int minimum = 2)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i]))
                throw new ModelInputException($"--ids: \"{parts[i]}\" (item {i + 1}) is not an integer token id; expected comma-separated ids like 1,2,3");
        if (ids.Length < minimum) throw new ModelInputException($"--ids: got {ids.Length} id(s); {(minimum == 2 ? "the causal-LM loss needs" : "give")} at least {minimum}");
        return ids;
    }
}
