using System.Security.Cryptography;
using System.Text.Json;

namespace Phi2Native.FineTuning.Training;

/// <summary>
/// <c>manifest.json</c> of a checkpoint folder: each file's size and SHA-256, written last into the folder before it is
/// renamed into place, and checked before a run resumes from it, so a damaged or edited checkpoint is refused naming
/// the file instead of resuming into wrong numbers.
/// </summary>
internal static class CheckpointManifest
{
    /// <summary>The manifest's file name inside a checkpoint folder.</summary>
    public const string FileName = "manifest.json";

    /// <summary>One file as the manifest records it.</summary>
    /// <param name="Bytes">Its size.</param>
    /// <param name="Sha256">Its SHA-256, lowercase hexadecimal.</param>
    public sealed record Entry(long Bytes, string Sha256);

    /// <summary>The manifest: the files of the folder (not the manifest itself), by name.</summary>
    /// <param name="Files">File name to size and hash, sorted by name.</param>
    public sealed record Contents(SortedDictionary<string, Entry> Files);

    /// <summary>Records every file of <paramref name="directory"/> (its top level; a checkpoint has no subfolders) in its manifest.</summary>
    internal static void Write(string directory)
    {
        var files = new SortedDictionary<string, Entry>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(directory))
        {
            string name = Path.GetFileName(path);
            if (name != FileName) files[name] = Describe(path);
        }
        string manifest = Path.Combine(directory, FileName), temporary = manifest + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(new Contents(files), FineTuningJson.Default.Contents));
        File.Move(temporary, manifest, overwrite: true);
    }

    /// <summary>
    /// Checks every file the manifest of <paramref name="directory"/> lists: present, of its size, with its hash.
    /// Returns false when the folder has no manifest (written before checkpoints had one): nothing could be checked.
    /// </summary>
    /// <exception cref="Phi2Exception">The manifest is malformed, or a file is missing, of another size or another content (the message names it).</exception>
    public static bool Verify(string directory)
    {
        string manifestPath = Path.Combine(directory, FileName);
        if (!File.Exists(manifestPath)) return false;
        Contents contents;
        try
        {
            contents = JsonSerializer.Deserialize(File.ReadAllText(manifestPath), FineTuningJson.Default.Contents)
                       ?? throw new Phi2Exception($"{manifestPath}: empty");
        }
        catch (JsonException e)
        {
            throw new Phi2Exception($"{manifestPath}: not a valid checkpoint manifest ({e.Message}); the checkpoint cannot be trusted", e);
        }
        foreach (var (name, expected) in contents.Files ?? [])
        {
            string path = Path.Combine(directory, name);
            if (Path.GetFileName(name) != name || !File.Exists(path))
                throw new Phi2Exception($"{path}: missing from the checkpoint (its {FileName} lists it); the checkpoint is damaged, resume from another one");
            long bytes = new FileInfo(path).Length;
            if (bytes != expected.Bytes)
                throw new Phi2Exception($"{path}: {bytes} bytes, but the checkpoint's {FileName} says {expected.Bytes}; the file was damaged or changed, resume from another checkpoint");
            if (!string.Equals(Describe(path).Sha256, expected.Sha256, StringComparison.OrdinalIgnoreCase))
                throw new Phi2Exception($"{path}: its SHA-256 differs from the one in the checkpoint's {FileName}; the file was damaged or changed, resume from another checkpoint");
        }
        return true;
    }

    private static Entry Describe(string path)
    {
        using var stream = File.OpenRead(path);
        return new Entry(stream.Length, Convert.ToHexStringLower(SHA256.HashData(stream)));
    }
}
