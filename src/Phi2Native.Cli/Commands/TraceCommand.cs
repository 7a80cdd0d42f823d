using System.CommandLine;
using Phi2Native.Hosting;

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
        // Declared before the engine, so the model's device memory is freed before the backend goes.
        using var backend = BackendChoice.Open(device, notices, withAdapter: adapterDirectory is not null);
        Notices.Model(modelOption, notices);
        using var engine = stages.Run($"loading {ModelSource.DisplayName(modelOption)}", progress => Phi2Engine.Load(new Phi2EngineOptions
        {
            ModelDirectory = modelOption, AdapterDirectory = adapterDirectory, Backend = backend.Backend, DType = backend.DType,
            Warn = warning => error.WriteLine($"warning: {warning}"), LoadProgress = progress,
        }));
        tokenIds ??= Tokenize(text!, engine, error);
        var trace = stages.Run(withGrads ? "forward and backward" : "forward", _ => engine.Trace(tokenIds, withGrads));
        error.WriteLine($"loss {trace.Loss:F6} over {tokenIds.Length} ids; {backend.Summary}");
        trace.Save(outPath, new Dictionary<string, string> { ["producer"] = "phi2 trace", ["model"] = ModelSource.BaseName(modelOption) });
        output.WriteLine($"wrote {outPath}");
        return 0;
    }

    /// <summary>
    /// --text as ids: the model folder's tokenizer (a folder without tokenizer files falls back to GPT-2's, with a
    /// warning), with an adapter's added tokens; the ids go to standard error so a run can be repeated with --ids.
    /// </summary>
    private static int[] Tokenize(string text, Phi2Engine engine, TextWriter error)
    {
        int[] ids = engine.Tokenizer.Encode(text);
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
