using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native;

/// <summary>One generated token: its id and the text it adds (empty while a multi-byte character is incomplete).</summary>
public sealed record GeneratedToken(int Id, string Text);

/// <summary>
/// The host API: a model, its tokenizer and optionally a LoRA adapter, ready to generate.
/// </summary>
/// <example><code>
/// using var engine = Phi2Engine.Load("/models/phi-2", adapterDirectory: "my-adapter");
/// await foreach (var token in engine.GenerateAsync("def fibonacci(n):", new GenerationOptions { MaxNewTokens = 64 }, cancellationToken))
///     Console.Write(token.Text);
/// </code></example>
public sealed class Phi2Engine : IDisposable
{
    private Phi2Engine(Phi2Model model, TextTokenizer tokenizer, LoraModel? adapter)
    {
        Model = model;
        Tokenizer = tokenizer;
        Adapter = adapter;
    }

    /// <summary>The model (on the CPU backend until the CUDA backend lands).</summary>
    public Phi2Model Model { get; }

    /// <summary>The model's tokenizer, with the adapter's added tokens.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>The applied adapter, if any.</summary>
    public LoraModel? Adapter { get; }

    /// <summary>
    /// Loads a model folder (config.json, weights, vocab.json, merges.txt), or the embedded tiny model when
    /// <paramref name="modelDirectory"/> is null, and applies a PEFT LoRA adapter folder if given.
    /// </summary>
    /// <exception cref="Phi2Exception">A folder or file is missing, malformed or does not fit (the message names it).</exception>
    public static Phi2Engine Load(string? modelDirectory = null, string? adapterDirectory = null, Action<string>? warn = null)
    {
        var model = modelDirectory is null
            ? EmbeddedDefault.CreateModel(CpuBackend.Default)
            : Phi2Checkpoint.Load(modelDirectory, CpuBackend.Default, DType.F32, warn);
        try
        {
            var tokenizer = modelDirectory is null ? EmbeddedDefault.Tokenizer() : TextTokenizer.FromModelFolder(modelDirectory, warn);
            LoraModel? adapter = null;
            if (adapterDirectory is not null)
            {
                adapter = PeftAdapter.Load(model, adapterDirectory, warn);
                NewTokens.Apply(tokenizer, adapterDirectory);
            }
            return new Phi2Engine(model, tokenizer, adapter);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Streams the continuation of <paramref name="prompt"/> token by token. The model runs on a worker thread, so the
    /// caller's thread stays free; cancelling stops it before the next forward.
    /// </summary>
    /// <exception cref="ModelInputException">The prompt is empty or longer than the model's context.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        // The prompt and options are checked here, on the caller's thread, before anything runs.
        var tokens = new Generator(Model, Tokenizer).Stream(Tokenizer.Encode(prompt), options ?? new GenerationOptions(), cancellationToken);
        return StreamAsync(tokens, cancellationToken);
    }

    private async IAsyncEnumerable<GeneratedToken> StreamAsync(IEnumerable<int> tokens, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var channel = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var worker = Task.Run(() =>
        {
            try
            {
                // Each token is handed over as soon as it is chosen; a character cut off by the end is dropped.
                var decoder = new IncrementalDecoder(Tokenizer);
                foreach (int id in tokens) channel.Writer.TryWrite(new GeneratedToken(id, decoder.Append(id)));
                channel.Writer.Complete();
            }
            catch (Exception e)
            {
                channel.Writer.Complete(e);
            }
        }, CancellationToken.None);
        await foreach (var token in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false)) yield return token;
        await worker.ConfigureAwait(false);
    }

    /// <summary>The whole continuation of <paramref name="prompt"/> as text.</summary>
    public async Task<string> CompleteAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        await foreach (var token in GenerateAsync(prompt, options, cancellationToken).ConfigureAwait(false)) text.Append(token.Text);
        return text.ToString();
    }

    /// <summary>Frees the adapter and the model.</summary>
    public void Dispose()
    {
        Adapter?.Dispose();
        Model.Dispose();
    }
}
