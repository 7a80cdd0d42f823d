using System.Runtime.CompilerServices;
using Phi2Native.Cuda;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Hosting;

/// <summary>One generated token: its id and the text it adds (empty while a multi-byte character is incomplete).</summary>
public sealed record GeneratedToken(int Id, string Text);

/// <summary>
/// The host API: a model, its tokenizer and optionally a LoRA adapter, ready to generate. Generations may run
/// concurrently, on one engine or on several engines sharing a backend: each gives what it gives alone, and their
/// forwards take turns on the backend (a backend is driven by one thread at a time).
/// </summary>
/// <example><code>
/// using var engine = Phi2Engine.Load("/models/phi-2", adapterDirectory: "my-adapter");
/// await foreach (var token in engine.GenerateAsync("def fibonacci(n):", new GenerationOptions { MaxNewTokens = 64 }, cancellationToken))
///     Console.Write(token.Text);
/// </code></example>
public sealed class Phi2Engine : IDisposable
{
    private readonly ComputeBackend _compute;
    private readonly SemaphoreSlim _backendTurn;
    private readonly HashSet<EngineGeneration> _running = [];
    private bool _disposed;

    private Phi2Engine(Phi2Model model, TextTokenizer tokenizer, LoraModel? adapter, ComputeBackend compute)
    {
        Model = model;
        Tokenizer = tokenizer;
        Adapter = adapter;
        _compute = compute;
        _backendTurn = BackendTurns.For(model.Backend);
    }

    /// <summary>The model, on the backend it was loaded onto (<see cref="Phi2EngineOptions.Device"/> or <see cref="Phi2EngineOptions.Backend"/>).</summary>
    public Phi2Model Model { get; }

    /// <summary>The backend the model computes on.</summary>
    public IBackend Backend => Model.Backend;

    /// <summary>Where the model computes, on one line: "cpu (16 threads), f32", "cuda:0 NVIDIA H200 (sm_90), bf16", "emulated, f32 (...)".</summary>
    public string DeviceDescription => _compute.Description;

    /// <summary>The dtype the model computes in (F32, or BF16 on the CUDA backend).</summary>
    public DType DType => Model.EmbedTokens.Weight.DType;

    /// <summary>The model's tokenizer, with the adapter's added tokens.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>The applied adapter, if any.</summary>
    public LoraModel? Adapter { get; }

    /// <summary>
    /// Loads a model folder (config.json, weights, vocab.json, merges.txt), or the embedded tiny model when
    /// <paramref name="modelDirectory"/> is null, and applies a PEFT LoRA adapter folder if given; on the CPU, in fp32.
    /// </summary>
    /// <exception cref="Phi2Exception">A folder or file is missing, malformed or does not fit (the message names it).</exception>
    public static Phi2Engine Load(string? modelDirectory = null, string? adapterDirectory = null, Action<string>? warn = null) =>
        Load(new Phi2EngineOptions { ModelDirectory = modelDirectory, AdapterDirectory = adapterDirectory, Warn = warn });

    /// <summary>
    /// Loads as <see cref="Load(string?, string?, Action{string}?)"/> does, onto the backend and in the dtype
    /// <paramref name="options"/> name: the CPU in fp32 by default, or the CUDA backend (a GPU or the emulated device) in
    /// fp32 or bf16. A backend the engine opened itself is disposed with the engine; <see cref="Phi2EngineOptions.Backend"/> is not.
    /// </summary>
    /// <exception cref="Phi2Exception">
    /// A folder or file is missing, malformed or does not fit; the device cannot be opened (no GPU: the message carries
    /// the CUDA probe's reason); or the backend cannot compute in the dtype
    /// (<see cref="ComputeDTypes.InferenceRefusal"/>: bf16 on the CPU; an fp32 adapter over a bf16 base runs on the CUDA backend).
    /// </exception>
    public static Phi2Engine Load(Phi2EngineOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Device, nameof(options.Device));
        var use = options.AdapterDirectory is null ? ComputeUse.Inference : ComputeUse.InferenceWithAdapter;
        // Refused before any device is opened or weight read: the reason is all the host needs to act on.
        var compute = options.Backend is null
            ? ComputeBackend.Open(options.Device, options.DType, use, KernelSources(options))
            : ComputeBackend.Over(options.Backend, options.DType, use);
        try
        {
            return Load(options, compute);
        }
        catch
        {
            compute.Dispose();
            throw;
        }
    }

    private static KernelSourceOptions KernelSources(Phi2EngineOptions options) =>
        (options.KernelSourceDirectory is { } folder
            ? new KernelSourceOptions { Directory = folder, Setting = $"{nameof(Phi2EngineOptions)}.{nameof(Phi2EngineOptions.KernelSourceDirectory)}" }
            : KernelSourceOptions.FromEnvironment()) with { Notice = options.Warn };

    private static Phi2Engine Load(Phi2EngineOptions options, ComputeBackend compute)
    {
        var model = ModelSource.LoadModel(options.ModelDirectory, compute.Backend, options.DType, options.Warn, options.LoadProgress);
        try
        {
            var tokenizer = ModelSource.LoadTokenizer(options.ModelDirectory, options.Warn);
            LoraModel? adapter = null;
            if (options.AdapterDirectory is not null)
            {
                adapter = PeftAdapter.Load(model, options.AdapterDirectory, options.Warn);
                NewTokens.Apply(tokenizer, options.AdapterDirectory);
            }
            return new Phi2Engine(model, tokenizer, adapter, compute);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Streams the continuation of <paramref name="prompt"/> token by token. Each token is computed when the loop asks
    /// for it, on the thread pool (the caller's thread stays free), so leaving the loop early (break, an exception in its
    /// body, disposing the enumerator) or cancelling stops the generation before its next forward and frees its KV cache.
    /// </summary>
    /// <exception cref="ModelInputException">The prompt is empty or longer than the model's context.</exception>
    /// <exception cref="Phi2Exception">Invalid options.</exception>
    /// <exception cref="ObjectDisposedException">The engine is disposed (also when the enumeration starts after that).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled, or the engine was disposed while the loop ran.</exception>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        // The prompt and options are checked here, on the caller's thread, before anything runs.
        var generator = new Generator(Model, Tokenizer);
        int[] promptIds = EncodePrompt(prompt);
        options ??= new GenerationOptions();
        generator.Check(promptIds, options);
        return StreamAsync(stop => generator.Stream(promptIds, options, stop), cancellationToken);
    }

    private async IAsyncEnumerable<GeneratedToken> StreamAsync(Func<CancellationToken, IEnumerable<int>> tokens, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var generation = new EngineGeneration(tokens, _backendTurn);
        lock (_running)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _running.Add(generation);
        }
        try
        {
            using var cancellation = cancellationToken.Register(generation.Cancel);
            // A character cut off by the end is dropped.
            var decoder = new IncrementalDecoder(Tokenizer);
            while (await generation.NextAsync().ConfigureAwait(false) is int id) yield return new GeneratedToken(id, decoder.Append(id));
        }
        finally
        {
            // Runs when the loop ends, breaks, throws or disposes the enumerator: no forward after this, the cache freed.
            await generation.CloseAsync().ConfigureAwait(false);
            lock (_running) _running.Remove(generation);
        }
    }

    /// <summary>
    /// The ids a generation starts from: <paramref name="prompt"/> tokenized, or, for an empty prompt, the config's
    /// <c>bos_token_id</c> alone (HF <c>generate</c> with no input starts unconditionally from it).
    /// </summary>
    /// <exception cref="ModelInputException">The prompt is empty and the config has no bos_token_id inside the vocabulary.</exception>
    public int[] EncodePrompt(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (prompt.Length > 0) return Tokenizer.Encode(prompt);
        var config = Model.Config;
        if (config.BosTokenId is not { } bos || bos < 0 || bos >= config.VocabSize)
            throw new ModelInputException("the prompt is empty and this model's config.json has no bos_token_id inside its vocabulary to start from; give some text");
        return [bos];
    }

    /// <summary>
    /// Generates from <paramref name="promptIds"/> on the calling thread, in the backend's turn (so it may run beside
    /// <see cref="GenerateAsync"/> streams), calling <paramref name="onToken"/> with each new id as it is chosen.
    /// </summary>
    /// <exception cref="ModelInputException">The prompt is empty, longer than the model's context, or holds an id outside the vocabulary.</exception>
    /// <exception cref="Phi2Exception">Invalid options.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each forward).</exception>
    /// <exception cref="ObjectDisposedException">The engine is disposed, also when that happened while this call waited for the backend's turn.</exception>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var generator = new Generator(Model, Tokenizer);
        generator.Check(promptIds, options);
        _backendTurn.Wait(cancellationToken);
        try
        {
            // Dispose may have freed the model while this call waited for the turn.
            ObjectDisposedException.ThrowIf(_disposed, this);
            return generator.Generate(promptIds, options, onToken, cancellationToken);
        }
        finally
        {
            _backendTurn.Release();
        }
    }

    /// <summary>
    /// One evaluation-mode forward over <paramref name="ids"/> (batch 1) and its causal-LM loss, and with
    /// <paramref name="gradients"/> one backward: every parameter's gradient (HF names), or, with an adapter, every
    /// adapter tensor's (PEFT keys), the base staying frozen.
    /// </summary>
    /// <exception cref="ModelInputException">Fewer than 2 ids (the loss needs a target), or an id outside the vocabulary.</exception>
    /// <exception cref="ObjectDisposedException">The engine is disposed, also when that happened while this call waited for the backend's turn.</exception>
    public ModelTrace Trace(IReadOnlyList<int> ids, bool gradients)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _backendTurn.Wait();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);   // as in Generate
            return ModelTrace.Run(Model, Adapter, ids, gradients);
        }
        finally
        {
            _backendTurn.Release();
        }
    }

    /// <summary>The whole continuation of <paramref name="prompt"/> as text.</summary>
    public async Task<string> CompleteAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new System.Text.StringBuilder();
        await foreach (var token in GenerateAsync(prompt, options, cancellationToken).ConfigureAwait(false)) text.Append(token.Text);
        return text.ToString();
    }

    /// <summary>
    /// Cancels every generation the engine is running and waits for each to finish its forward in flight and free its
    /// cache (their loops then end with <see cref="OperationCanceledException"/>), then frees the adapter and the model,
    /// and the backend if the engine opened it (its device memory with it).
    /// </summary>
    public void Dispose()
    {
        EngineGeneration[] running;
        lock (_running)
        {
            if (_disposed) return;
            _disposed = true;
            running = [.. _running];
        }
        foreach (var generation in running) generation.CloseAsync().GetAwaiter().GetResult();
        _backendTurn.Wait();
        try
        {
            Adapter?.Dispose();
            Model.Dispose();
        }
        finally
        {
            _backendTurn.Release();
        }
        _compute.Dispose();
    }
}
