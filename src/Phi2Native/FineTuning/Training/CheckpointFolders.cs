using System.Globalization;

namespace Phi2Native.FineTuning.Training;

/// <summary>
/// The checkpoints/ folder of a run: step-N/ folders (<see cref="TrainingCheckpoint"/>), the leftovers a killed
/// write can leave, the abandoned history a resume moves aside, and how many checkpoints are kept.
/// </summary>
internal static class CheckpointFolders
{
    public const string FolderName = "checkpoints";
    public const string StepPrefix = "step-";
    public const string AbandonedPrefix = "abandoned-";

    /// <summary>checkpoints/ under a run's output folder.</summary>
    public static string Root(string outputDirectory) => Path.Combine(outputDirectory, FolderName);

    /// <summary>The folder of step <paramref name="step"/>'s checkpoint.</summary>
    public static string OfStep(string outputDirectory, int step) => Path.Combine(Root(outputDirectory), $"{StepPrefix}{step}");

    /// <summary>The step-N folders under <paramref name="root"/>, by step.</summary>
    public static IReadOnlyList<(int Step, string Path)> Steps(string root)
    {
        if (!Directory.Exists(root)) return [];
        return Directory.EnumerateDirectories(root, StepPrefix + "*")
            .Select(path => (Step: StepOf(Path.GetFileName(path)), Path: path))
            .Where(entry => entry.Step >= 0)
            .OrderBy(entry => entry.Step)
            .ToList();
    }

    /// <summary>N for a folder named step-N, or -1.</summary>
    public static int StepOf(string folderName) =>
        folderName.StartsWith(StepPrefix, StringComparison.Ordinal)
        && int.TryParse(folderName.AsSpan(StepPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int step) ? step : -1;

    /// <summary>
    /// Cleans what a write killed half-way left (<see cref="TrainingCheckpoint"/> writes ".step-N.tmp-*" and renames it;
    /// a rewrite of step N first moves the old one to "step-N.old-*"): temporary folders are removed, and an old copy is
    /// removed when its step-N is in place, or put back when the kill came between the two renames. Returns what it did.
    /// </summary>
    public static IReadOnlyList<string> RemoveHalfMade(string root)
    {
        var done = new List<string>();
        if (!Directory.Exists(root)) return done;
        foreach (var temporary in Directory.EnumerateDirectories(root, $".{StepPrefix}*.tmp-*").ToList())
        {
            Directory.Delete(temporary, recursive: true);
            done.Add($"removed {temporary}, a checkpoint whose writing was cut off");
        }
        foreach (var old in Directory.EnumerateDirectories(root, $"{StepPrefix}*.old-*").ToList())
        {
            string name = Path.GetFileName(old), target = Path.Combine(root, name[..name.IndexOf(".old-", StringComparison.Ordinal)]);
            if (Directory.Exists(target))
            {
                Directory.Delete(old, recursive: true);
                done.Add($"removed {old}, a replaced checkpoint left behind");
            }
            else
            {
                Directory.Move(old, target);
                done.Add($"restored {target}, whose replacement was cut off");
            }
        }
        return done;
    }

    /// <summary>
    /// Moves every step-N folder with N &gt; <paramref name="step"/> into a new abandoned-&lt;time&gt;/ folder (with
    /// a copy of each of <paramref name="alsoCopy"/>, e.g. the whole old metrics.jsonl), so the newest checkpoint always belongs to the history
    /// being written. Returns that folder, or null when there was nothing to move or copy.
    /// </summary>
    public static string? Abandon(string root, int step, DateTime utcNow, IEnumerable<(string Source, string Name)> alsoCopy)
    {
        var later = Steps(root).Where(entry => entry.Step > step).ToList();
        var copies = alsoCopy.ToList();
        if (later.Count == 0 && copies.Count == 0) return null;
        string stamp = utcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture), folder = Path.Combine(root, AbandonedPrefix + stamp);
        for (int n = 2; Directory.Exists(folder); n++) folder = Path.Combine(root, $"{AbandonedPrefix}{stamp}-{n}");
        Directory.CreateDirectory(folder);
        foreach (var (_, path) in later) Directory.Move(path, Path.Combine(folder, Path.GetFileName(path)));
        foreach (var (source, name) in copies)
            if (File.Exists(source)) File.Copy(source, Path.Combine(folder, name));
        return folder;
    }

    /// <summary>Deletes the oldest step-N folders so that at most <paramref name="keep"/> remain; never <paramref name="newest"/>. Returns those deleted.</summary>
    public static IReadOnlyList<string> Prune(string root, int keep, string newest)
    {
        var steps = Steps(root);
        var deleted = new List<string>();
        string keepPath = Path.GetFullPath(newest);
        foreach (var (_, path) in steps.Take(Math.Max(0, steps.Count - keep)))
        {
            if (Path.GetFullPath(path) == keepPath) continue;
            Directory.Delete(path, recursive: true);
            deleted.Add(path);
        }
        return deleted;
    }
}
