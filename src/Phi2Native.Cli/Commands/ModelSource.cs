using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.Models.Phi2;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// Where a command's model comes from: the folder given with --model, or, without one, the embedded tiny model written
/// to a temporary folder (deleted when the process ends), so every path that reads a folder reads it the same way.
/// </summary>
internal static class ModelSource
{
    private static readonly Lazy<string> s_embedded = new(() =>
    {
        string directory = Path.Combine(Path.GetTempPath(), $"phi2native-embedded-{Environment.ProcessId}-{Guid.NewGuid():N}");
        EmbeddedDefault.WriteModelFolder(directory);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(directory, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return directory;
    });

    /// <summary>True when no --model was given.</summary>
    public static bool IsEmbedded(string? model) => model is null;

    /// <summary>The model folder to read: <paramref name="model"/>, or the embedded one (announced on one line of <paramref name="notices"/>).</summary>
    public static string Resolve(string? model, TextWriter notices)
    {
        if (model is not null) return model;
        notices.WriteLine($"model: {EmbeddedDefault.Summary}; --model PATH for a real one");
        return s_embedded.Value;
    }

    /// <summary>What an adapter records as its base: the folder, or "embedded".</summary>
    public static string BaseName(string? model) => model is null ? "embedded" : Path.GetFullPath(model);

    /// <summary>
    /// Loads the model of <paramref name="model"/> (or the embedded one, said on <paramref name="notices"/>) onto the
    /// chosen backend in its dtype, with progress and warnings on <paramref name="error"/>; returns it with the folder it came from.
    /// </summary>
    public static (Phi2Model Model, string Directory) Load(string? model, BackendChoice backend, StageProgress stages, TextWriter error, TextWriter notices)
    {
        string directory = Resolve(model, notices);
        var loaded = stages.Run($"loading {model ?? "the embedded model"}", progress =>
            Phi2Checkpoint.Load(directory, backend.Backend, backend.DType, warning => error.WriteLine($"warning: {warning}"), progress));
        return (loaded, directory);
    }
}
