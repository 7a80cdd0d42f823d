using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Data;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Embedded;

/// <summary>
/// The embedded default model, used by every command run without <c>--model</c>: a tiny stand-in with Phi-2's
/// structure (parallel attention + MLP off one LayerNorm, partial rotary at factor 0.4, gelu_new, biased Linears,
/// untied lm_head) at small dimensions, a byte-level BPE tokenizer in Phi-2's file format trained on the shipped
/// text, and that text: Genesis and Exodus from the King James Bible (public domain), split into training and
/// validation parts. It is not Phi-2. Its weights are the pretrained base (<see cref="EmbeddedBase"/>): the model
/// trained on Genesis by a reproducible recipe, shipped as a resource; <see cref="CreateRandomModel(IBackend, int)"/>
/// gives the untrained model, random from a seed.
/// </summary>
/// <remarks>
/// <para>Everything comes from resources of this assembly, made by code in <c>src/Phi2Native/Embedded/</c>
/// (<c>make_text.py</c>, <c>make_tokenizer.py</c>, and <see cref="EmbeddedBase"/> for the weights; the README
/// there gives the source and licence of the text and why the dimensions are what they are). No file is read or
/// downloaded at run time.</para>
/// <para>The dimensions and tokenizer were chosen so that plain full-parameter AdamW with
/// <see cref="RecommendedTraining"/> takes the validation loss below half its starting value in about a minute on
/// a 2-core CPU (bench/RESULTS.md, "Embedded default model").</para>
/// </remarks>
public static class EmbeddedDefault
{
    /// <summary>The seed of the random weights the pretrained base was trained from, and of <see cref="CreateRandomModel(IBackend, int)"/>'s default.</summary>
    public const int DefaultSeed = 1234;

    /// <summary>Paragraph i of the text (0-based) belongs to the validation part when i % <see cref="ValidationEvery"/> is <see cref="ValidationEvery"/> - 1.</summary>
    /// <remarks>A paragraph is a chapter; 90 chapters give 4 for validation (Genesis 20 and 40, Exodus 10 and 30).</remarks>
    public const int ValidationEvery = 20;

    private const string ResourcePrefix = "Phi2Native.Embedded.";
    private const string TextResource = "kjv-genesis-exodus.txt";
    private static readonly Lazy<int> s_tokenizerSize = new(() => Tokenizer().VocabularySize);

    private static readonly string[] TokenizerResources = ["vocab.json", "merges.txt", "added_tokens.json"];

    private static readonly Lazy<Phi2Config> s_config = new(() =>
        Phi2Config.Parse(ReadResource("config.json"), "the embedded default's config.json"));

    private static readonly Lazy<string> s_text = new(() => ReadResource(TextResource));

    private static readonly Lazy<TextSplit> s_split = new(() =>
    {
        var paragraphs = Paragraphs(s_text.Value);
        string[] training = paragraphs.Where((_, i) => !IsValidation(i)).ToArray(), validation = paragraphs.Where((_, i) => IsValidation(i)).ToArray();
        return new TextSplit(Array.AsReadOnly(training), Array.AsReadOnly(validation), string.Join("\n\n", training), string.Join("\n\n", validation));
    });

    /// <summary>The model's hyper-parameters, from the embedded config.json (Phi-2's keys and structure, small dimensions).</summary>
    public static Phi2Config Config => s_config.Value;

    /// <summary>Where the text comes from and its licence, in one line.</summary>
    public const string TextSource =
        "Genesis and Exodus, King James Version (1611), from Debian's bible-kjv-text package; public domain (Crown " +
        "letters patent in the UK only)";

    /// <summary>
    /// Says plainly what the embedded default is, and how to use a real Phi-2 instead; for the output of commands
    /// run without <c>--model</c>.
    /// </summary>
    public static string Description =>
        $"The embedded default model is a tiny stand-in, not Phi-2: {ParameterCount(Config) / 1e6:F2}M parameters " +
        $"(V={Config.VocabSize} C={Config.HiddenSize} layers={Config.NumHiddenLayers} heads={Config.NumAttentionHeads} " +
        $"D={Config.HeadDim} rotary={Config.RotaryDim} MLP={Config.IntermediateSize}) with Phi-2's structure, pretrained on " +
        $"Genesis only (the shipped base), and a {s_tokenizerSize.Value}-token BPE tokenizer of its own ({Config.VocabSize - s_tokenizerSize.Value} spare embedding rows for new tokens), " +
        $"trained on the shipped text ({TextSource}). " +
        "It knows a little of one book and nothing else. To work with the real Phi-2, pass --model with a folder holding its " +
        "config.json, model*.safetensors, vocab.json and merges.txt (e.g. a download of microsoft/phi-2).";

    /// <summary>What the embedded default is, in a few words: for the one notice of a command run without <c>--model</c>.</summary>
    public static string Summary => $"the embedded {ParameterCount(Config) / 1e6:F2}M stand-in trained on Genesis, not Phi-2";

    /// <summary>The training part of the text: its paragraphs (chapters) in order, separated by blank lines.</summary>
    public static string TrainingText => s_split.Value.TrainingText;

    /// <summary>The validation part: every <see cref="ValidationEvery"/>th paragraph, in order, separated by blank lines.</summary>
    public static string ValidationText => s_split.Value.ValidationText;

    /// <summary>The training paragraphs: each a chapter, its heading ("Genesis 1") on the first line and then one verse per line.</summary>
    public static IReadOnlyList<string> TrainingParagraphs => s_split.Value.Training;

    /// <summary>The validation paragraphs, disjoint from <see cref="TrainingParagraphs"/>.</summary>
    public static IReadOnlyList<string> ValidationParagraphs => s_split.Value.Validation;

    /// <summary>The whole shipped text, both parts, as the resource holds it.</summary>
    public static string FullText => s_text.Value;

    /// <summary>
    /// Settings with which plain full-parameter AdamW training of <see cref="CreateRandomModel(IBackend, int)"/> halves the validation
    /// loss in about a minute on a 2-core CPU (measured in bench/RESULTS.md); a starting point for commands.
    /// </summary>
    public static EmbeddedTrainingSettings RecommendedTraining { get; } = new();

    /// <summary>
    /// A fresh copy of the embedded tokenizer: Phi2Tokenizer over the embedded vocab.json + merges.txt, with
    /// &lt;|endoftext|&gt; and the whole tokens for two spaces and two tabs from added_tokens.json.
    /// </summary>
    /// <remarks>
    /// A new instance each call, since <see cref="TextTokenizer.AddToken"/> changes the one it is called on. The
    /// files are written to a temporary folder, loaded through <see cref="TextTokenizer.FromModelFolder"/> (so
    /// they pass exactly the checks a model folder's do) and deleted.
    /// </remarks>
    public static TextTokenizer Tokenizer()
    {
        string folder = TemporaryFolder("tokenizer");
        try
        {
            foreach (string name in TokenizerResources) WriteResource(name, folder);
            return TextTokenizer.FromModelFolder(folder);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// The embedded model with the pretrained base's weights (<see cref="EmbeddedBase"/>), loaded through
    /// <see cref="Phi2Checkpoint.Load"/> from the folder <see cref="WriteModelFolder"/> writes, so they pass the checks
    /// every model folder's do.
    /// </summary>
    /// <param name="backend">Where the weights go.</param>
    /// <param name="dtype">The weights' dtype (the F32 file converted once: BF16 on the CUDA backend, see <see cref="Hosting.ComputeDTypes"/>).</param>
    public static Phi2Model CreateModel(IBackend backend, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return LoadFolder(backend, dtype, folder => WriteModelFolder(folder));
    }

    /// <summary>
    /// The embedded model with the weights of another safetensors file in the base's layout (a base made by
    /// <see cref="EmbeddedBase.Make(string, Action{FineTuning.Training.Trainer}?, Func{FineTuning.Training.Trainer, FineTuning.Training.TrainingResult}?)"/>
    /// and not yet shipped), loaded as <see cref="CreateModel(IBackend, DType)"/> loads the shipped one.
    /// </summary>
    internal static Phi2Model CreateModel(IBackend backend, string weightsFile, DType dtype = DType.F32) =>
        LoadFolder(backend, dtype, folder =>
        {
            WriteConfigAndTokenizer(folder);
            File.Copy(weightsFile, Path.Combine(folder, "model.safetensors"), overwrite: true);
        });

    private static Phi2Model LoadFolder(IBackend backend, DType dtype, Action<string> write)
    {
        string folder = TemporaryFolder("base");
        try
        {
            write(folder);
            return Phi2Checkpoint.Load(folder, backend, dtype);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// The embedded model untrained: random weights (HF's initialization: normal(0, 0.02), zero biases, unit
    /// LayerNorms) from <paramref name="seed"/>. What <c>phi2 demo --from-scratch</c> trains and the base was made from.
    /// </summary>
    /// <param name="backend">Where the weights go.</param>
    /// <param name="seed">The weights' seed; the same seed gives the same weights on every machine.</param>
    public static Phi2Model CreateRandomModel(IBackend backend, int seed = DefaultSeed)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return Phi2Model.CreateRandom(Config, backend, seed);
    }

    /// <summary>
    /// The untrained model as <see cref="CreateRandomModel(IBackend, int)"/> makes it, its weights stored and computed in
    /// <paramref name="dtype"/> (each drawn in fp32, then rounded once).
    /// </summary>
    /// <param name="backend">Where the weights go.</param>
    /// <param name="dtype">The weights' dtype.</param>
    /// <param name="seed">The weights' seed.</param>
    public static Phi2Model CreateRandomModel(IBackend backend, DType dtype, int seed = DefaultSeed)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return Phi2Model.CreateRandom(Config, backend, seed, dtype);
    }

    /// <summary>
    /// Writes the embedded model as a normal model folder that every <c>--model</c> path reads: config.json,
    /// model.safetensors (the pretrained base's F32 weights, byte for byte the shipped file), vocab.json, merges.txt
    /// and added_tokens.json. Files already there with those names are replaced.
    /// </summary>
    /// <returns>The folder's full path.</returns>
    public static string WriteModelFolder(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        WriteConfigAndTokenizer(directory);
        WriteResource(EmbeddedBase.ResourceName, directory, "model.safetensors");
        return Path.GetFullPath(directory);
    }

    private static void WriteConfigAndTokenizer(string directory)
    {
        foreach (string name in TokenizerResources.Append("config.json")) WriteResource(name, directory);
    }

    /// <summary>
    /// Writes the untrained embedded model as a model folder: the files of <see cref="WriteModelFolder"/>, with the
    /// random weights of <see cref="CreateRandomModel(IBackend, int)"/> for <paramref name="seed"/> in model.safetensors (F32).
    /// </summary>
    /// <returns>The folder's full path.</returns>
    public static string WriteRandomModelFolder(string directory, int seed)
    {
        ArgumentNullException.ThrowIfNull(directory);
        // The checkpoint writer copies config.json (keeping its keys, partial_rotary_factor 0.4 included) and the
        // tokenizer files from a source folder; staging the resources there makes the written folder the one shipped.
        string staging = TemporaryFolder("model");
        try
        {
            WriteConfigAndTokenizer(staging);
            using var model = CreateRandomModel(CpuBackend.Default, seed);
            Phi2CheckpointWriter.Save(model, directory, DType.F32, staging);
        }
        finally
        {
            Directory.Delete(staging, recursive: true);
        }
        return Path.GetFullPath(directory);
    }

    /// <summary>
    /// The shipped text as packed rows of <paramref name="maxLength"/> tokens, an &lt;|endoftext|&gt; after each
    /// chapter: training and validation parts, as <c>phi2 demo</c> and the embedded bench train on them.
    /// </summary>
    public static (TrainingRows Training, TrainingRows Validation) PackedRows(TextTokenizer tokenizer, int maxLength) =>
        (Pack(tokenizer, TrainingParagraphs, maxLength, "embedded training text"), Pack(tokenizer, ValidationParagraphs, maxLength, "embedded validation text"));

    /// <summary>Packs <paramref name="paragraphs"/> into rows of <paramref name="maxLength"/> tokens, an &lt;|endoftext|&gt; after each.</summary>
    internal static TrainingRows Pack(TextTokenizer tokenizer, IReadOnlyList<string> paragraphs, int maxLength, string source)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        int endOfText = tokenizer.EndOfTextId ?? throw new Phi2Exception("the tokenizer has no <|endoftext|> to separate chapters");
        return TrainingRows.Create(
            paragraphs.Select(p => tokenizer.Encode(p).Append(endOfText).ToArray()).Select(ids => new TokenizedExample(ids, ids)).ToList(),
            maxLength, BatchingMode.Packing, endOfText, source);
    }

    /// <summary>Writes the training paragraphs as JSONL, one <c>{"text": "..."}</c> line per paragraph (chapter), for <see cref="JsonlDataset"/>.</summary>
    /// <returns>The file's full path.</returns>
    public static string WriteTrainingJsonl(string path) => WriteJsonl(path, TrainingParagraphs);

    /// <summary>Writes the validation paragraphs as JSONL, one <c>{"text": "..."}</c> line per paragraph (chapter).</summary>
    /// <returns>The file's full path.</returns>
    public static string WriteValidationJsonl(string path) => WriteJsonl(path, ValidationParagraphs);

    /// <summary>Splits the text into paragraphs at blank lines; line ends are '\n' in the resource.</summary>
    internal static string[] Paragraphs(string text) =>
        text.Replace("\r\n", "\n").Split("\n\n", StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Whether paragraph <paramref name="index"/> (0-based) belongs to the validation part.</summary>
    internal static bool IsValidation(int index) => index % ValidationEvery == ValidationEvery - 1;

    private sealed record TextSplit(IReadOnlyList<string> Training, IReadOnlyList<string> Validation, string TrainingText, string ValidationText);

    private static long ParameterCount(Phi2Config config) =>
        Phi2Model.ParameterShapes(config).Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b));

    private static string WriteJsonl(string path, IReadOnlyList<string> paragraphs)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path), temporary = full + ".tmp";
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        using (var stream = File.Create(temporary))
        {
            // Relaxed escaping keeps apostrophes readable; newlines inside a paragraph are escaped as \n either way.
            var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
            foreach (string paragraph in paragraphs)
            {
                using (var writer = new Utf8JsonWriter(stream, options))
                {
                    writer.WriteStartObject();
                    writer.WriteString("text", paragraph);
                    writer.WriteEndObject();
                }
                stream.WriteByte((byte)'\n');
            }
        }
        File.Move(temporary, full, overwrite: true);
        return full;
    }

    private static string TemporaryFolder(string what)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"phi2native-embedded-{what}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        return folder;
    }

    private static void WriteResource(string name, string folder, string? fileName = null)
    {
        using var source = OpenResource(name);
        using var destination = File.Create(Path.Combine(folder, fileName ?? name));
        source.CopyTo(destination);
    }

    private static string ReadResource(string name)
    {
        using var reader = new StreamReader(OpenResource(name), Encoding.UTF8);
        return reader.ReadToEnd();
    }

    internal static Stream OpenResource(string name) =>
        typeof(EmbeddedDefault).Assembly.GetManifestResourceStream(ResourcePrefix + name)
        ?? throw new InvalidOperationException($"the assembly lacks the resource {ResourcePrefix + name}; Phi2Native.csproj embeds src/Phi2Native/Embedded/{name}");
}

/// <summary>
/// Training settings for the embedded default model: full-parameter AdamW with warmup and cosine decay, packed
/// rows of the shipped text. Measured in bench/RESULTS.md ("Embedded default model").
/// </summary>
public sealed record EmbeddedTrainingSettings
{
    /// <summary>B, rows per batch.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>T, tokens per row (packed).</summary>
    public int MaxLength { get; init; } = 128;

    /// <summary>The peak learning rate.</summary>
    public double LearningRate { get; init; } = 2e-3;

    /// <summary>Steps of linear warmup from 0.</summary>
    public int WarmupSteps { get; init; } = 20;

    /// <summary>Optimizer steps in the run; the cosine decay reaches 0 at the last one.</summary>
    public int Steps { get; init; } = 600;

    /// <summary>Decoupled weight decay (biases and LayerNorms are exempt, as in HF).</summary>
    public double WeightDecay { get; init; } = 0.1;

    /// <summary>Largest global gradient norm; larger gradients are scaled down to it.</summary>
    public double MaxGradientNorm { get; init; } = 1.0;

    /// <summary>Seed of the data order.</summary>
    public ulong DataSeed { get; init; } = 42;

    /// <summary>Residual dropout while training, replacing the config's resid_pdrop (0) when set; its masks come from the trainer's seed.</summary>
    public double? ResidualDropout { get; init; }
}
