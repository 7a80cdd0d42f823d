using Phi2Native.Embedded;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Hosting;

/// <summary>
/// Where a model comes from: a model folder (config.json, weights, vocab.json, merges.txt), or, for a null folder, the
/// embedded tiny stand-in (<see cref="EmbeddedDefault"/>). Every command and host reads models through here, so "no
/// folder" means the same everywhere.
/// </summary>
public static class ModelSource
{
    /// <summary>What an adapter records as the base of the embedded model (PEFT's <c>base_model_name_or_path</c>).</summary>
    public const string EmbeddedName = "embedded";

    /// <summary>What an adapter records as its base: the folder's full path, or <see cref="EmbeddedName"/>.</summary>
    public static string BaseName(string? modelDirectory) => modelDirectory is null ? EmbeddedName : Path.GetFullPath(modelDirectory);

    /// <summary>For messages and titles: the folder's name, or "the embedded model".</summary>
    public static string DisplayName(string? modelDirectory) =>
        modelDirectory is null ? "the embedded model" : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDirectory)));

    /// <summary>The model's config.json (only that file is read), or the embedded model's config.</summary>
    /// <exception cref="Phi2Exception">The folder is missing or a file, or its config.json is missing or malformed (the message names it).</exception>
    public static Phi2Config LoadConfig(string? modelDirectory, Action<string>? warn = null)
    {
        if (modelDirectory is null) return EmbeddedDefault.Config;
        RequireFolder(modelDirectory);
        return Phi2Config.Load(Path.Combine(modelDirectory, "config.json"), warn);
    }

    /// <summary>
    /// The model's tokenizer (vocab.json + merges.txt and added tokens; a folder without them falls back to GPT-2's,
    /// said through <paramref name="warn"/>), or a fresh copy of the embedded one.
    /// </summary>
    /// <exception cref="Phi2Exception">The folder is missing, or a tokenizer file is malformed.</exception>
    public static TextTokenizer LoadTokenizer(string? modelDirectory, Action<string>? warn = null)
    {
        if (modelDirectory is null) return EmbeddedDefault.Tokenizer();
        RequireFolder(modelDirectory);
        return TextTokenizer.FromModelFolder(modelDirectory, warn);
    }

    /// <summary>
    /// The model's weights on <paramref name="backend"/>, stored and computed in <paramref name="dtype"/> (see
    /// <see cref="ComputeDTypes"/>), or the embedded model's.
    /// </summary>
    /// <param name="modelDirectory">The folder, or null for the embedded model.</param>
    /// <param name="backend">Where the weights go.</param>
    /// <param name="dtype">The compute dtype.</param>
    /// <param name="warn">Receives non-fatal remarks about the files.</param>
    /// <param name="progress">Receives the fraction loaded, 0 to 1.</param>
    /// <exception cref="Phi2Exception">A folder or file is missing, malformed or does not fit its config (the message names it).</exception>
    public static Phi2Model LoadModel(string? modelDirectory, IBackend backend, DType dtype = DType.F32, Action<string>? warn = null, IProgress<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (modelDirectory is not null) return Phi2Checkpoint.Load(modelDirectory, backend, dtype, warn, progress);
        var model = EmbeddedDefault.CreateModel(backend, dtype);
        progress?.Report(1);
        return model;
    }

    /// <summary>
    /// A folder holding the model's files, for what reads or copies files (a merge copies the base's config and
    /// tokenizer): the folder itself, or the embedded model written into a new temporary folder that <paramref name="cleanUp"/> deletes.
    /// </summary>
    internal static string AsFolder(string? modelDirectory, out Action cleanUp)
    {
        cleanUp = () => { };
        if (modelDirectory is not null) return modelDirectory;
        string folder = Path.Combine(Path.GetTempPath(), $"phi2native-embedded-{Environment.ProcessId}-{Guid.NewGuid():N}");
        EmbeddedDefault.WriteModelFolder(folder);
        cleanUp = () =>
        {
            try { Directory.Delete(folder, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        };
        return folder;
    }

    private static void RequireFolder(string modelDirectory)
    {
        if (IO.PathChecks.FolderProblem(modelDirectory) is { } problem)
            throw new CheckpointException($"model folder '{modelDirectory}' {problem}; pass a model folder (config.json, weights, vocab.json, merges.txt)");
    }
}
