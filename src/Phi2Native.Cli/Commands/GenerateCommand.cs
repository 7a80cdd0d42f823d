using System.CommandLine;
using System.Diagnostics;
using Phi2Native.Hosting;
using Phi2Native.Text;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 generate`: continues a prompt with the KV cache, streaming text to standard output token by token; everything
/// else (speed, warnings, the model used) goes to standard error. --ids/--print-ids work on raw ids for research.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Model folder (default: the embedded tiny model)." };
        var adapter = new Option<string?>("--adapter") { Description = "A PEFT LoRA adapter folder to apply (its added tokens too)." };
        var prompt = new Option<string?>("--prompt") { Description = "The text to continue (empty: start from the config's bos_token_id, as HF does with no input)." };
        var ids = new Option<string?>("--ids") { Description = "The prompt as raw comma-separated ids (no tokenizer needed)." };
        var maxTokens = new Option<int>("--max-tokens") { Description = "New tokens at most.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy (the lowest id on ties); higher = more random.", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: off).", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "Sample among the most likely tokens whose probability adds up to p, in (0, 1].", DefaultValueFactory = _ => 1 };
        var seed = new Option<ulong?>("--seed") { Description = "Seed of the sampling, a whole number from 0 (runs repeat)." };
        var stop = new Option<string[]>("--stop")
        {
            Description = "Stop after this text appears (repeatable). Taken literally: for a blank line write --stop $'\\n\\n' in bash.", AllowMultipleArgumentsPerToken = false,
        };
        var printIds = new Option<bool>("--print-ids") { Description = "Print only the new ids, comma-separated, on one line." };
        var truncate = new Option<bool>("--truncate") { Description = "Keep the end of a prompt longer than the model's context instead of failing." };
        var noGraphs = new Option<bool>("--no-cuda-graphs")
        {
            Description = "On a CUDA device, run each decode step's kernels one by one instead of replaying one captured CUDA graph per token (the tokens are the same).",
        };
        var device = new DeviceOptions(DeviceOptions.InferenceDTypeDescription);
        var command = new Command("generate", "Continue a prompt (greedy, temperature, top-k, top-p) with a KV cache, streaming the text.")
        {
            model, adapter, prompt, ids, maxTokens, temperature, topK, topP, seed, stop, printIds, truncate, noGraphs,
        };
        foreach (var option in device.All) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () => Run(new Request(
            result.GetValue(model), result.GetValue(adapter), result.GetValue(prompt), result.GetValue(ids), result.GetValue(maxTokens),
            new SamplingOptions { Temperature = result.GetValue(temperature), TopK = result.GetValue(topK), TopP = result.GetValue(topP), Seed = result.GetValue(seed) },
            result.GetValue(stop) ?? [], result.GetValue(printIds), result.GetValue(truncate), device.Read(result), !result.GetValue(noGraphs)), output, error,
            Notices.Writer(result, error))));
        return command;
    }

    public sealed record Request(string? Model, string? Adapter, string? Prompt, string? Ids, int MaxTokens, SamplingOptions Sampling,
        string[] Stop, bool PrintIds, bool Truncate, DeviceRequest Device, bool CudaGraphs = true);

    public static int Run(Request request, TextWriter output, TextWriter error, TextWriter notices)
    {
        if ((request.Prompt is null) == (request.Ids is null)) throw new Phi2Exception("give the prompt as --prompt TEXT or as --ids 1,2,3 (one of them)");
        if (request.MaxTokens < 0) throw new Phi2Exception($"--max-tokens must not be negative, got {request.MaxTokens}");
        if (request.Stop.Any(string.IsNullOrEmpty)) throw new Phi2Exception("--stop \"\": an empty stop string would stop before the first token; give some text");
        var options = new GenerationOptions { MaxNewTokens = request.MaxTokens, Sampling = request.Sampling, StopStrings = request.Stop, CudaGraphs = request.CudaGraphs };
        options.Validate();
        int[]? rawIds = request.Ids is null ? null : TraceCommand.ParseIds(request.Ids, minimum: 1);   // bad ids fail before the model loads
        // Declared before the engine, so the model's device memory is freed before the backend goes.
        using var backend = BackendChoice.Open(request.Device, notices, withAdapter: request.Adapter is not null);
        Notices.Model(request.Model, notices);
        using var engine = new StageProgress(error).Run($"loading {ModelSource.DisplayName(request.Model)}", progress => Phi2Engine.Load(new Phi2EngineOptions
        {
            ModelDirectory = request.Model, AdapterDirectory = request.Adapter, Backend = backend.Backend, DType = backend.DType,
            Warn = warning => error.WriteLine($"warning: {warning}"), LoadProgress = progress,
        }));

        int[] promptIds = rawIds ?? engine.EncodePrompt(request.Prompt!);
        if (request.Prompt == "") error.WriteLine($"--prompt is empty: starting from bos_token_id {promptIds[0]}");
        int limit = engine.Model.Config.MaxPositionEmbeddings;
        if (promptIds.Length > limit && request.Truncate)
        {
            error.WriteLine($"warning: the prompt has {promptIds.Length} tokens; keeping its last {limit - 1} (--truncate)");
            promptIds = promptIds[^(limit - 1)..];
        }
        else if (promptIds.Length > limit)
            throw new ModelInputException($"the prompt has {promptIds.Length} tokens, more than this model's max_position_embeddings ({limit}); shorten it or pass --truncate");

        var decoder = new IncrementalDecoder(engine.Tokenizer);
        var clock = Stopwatch.StartNew();
        var result = engine.Generate(promptIds, options, token =>
        {
            if (request.PrintIds) return;
            output.Write(decoder.Append(token));
            output.Flush();
        });
        double seconds = clock.Elapsed.TotalSeconds;
        output.WriteLine(request.PrintIds ? string.Join(",", result.Tokens) : decoder.Flush());
        error.WriteLine($"{result.Tokens.Count} tokens in {seconds:F2} s ({result.Tokens.Count / Math.Max(seconds, 1e-9):F1} tokens/s), stopped: {result.StopReason}; {backend.Summary}");
        return 0;
    }
}
