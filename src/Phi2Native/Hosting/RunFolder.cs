using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;

namespace Phi2Native.Hosting;

/// <summary>
/// A fine-tuning run's output folder, held by one run at a time: an exclusive OS lock on a file in it (flock on
/// Linux and macOS, a sharing lock on Windows), which the OS releases when the process ends however it ends, so a
/// killed run never blocks the next. It decides, before anything loads, whether a run may start there, and puts the
/// folder's history in order just before training.
/// </summary>
internal sealed class RunFolder : IDisposable
{
    /// <summary>The lock file. It stays after the run (removing it could race with the next run taking it); only the lock on it means anything.</summary>
    public const string LockFileName = ".phi2-finetune.lock";

    /// <summary>What a new run clears with --overwrite: the files a run writes at the folder's top (checkpoints/ goes whole).</summary>
    private static readonly string[] RunFiles =
        [MetricsLog.FileName, "loss.png", "adapter_config.json", PeftAdapter.WeightsFileName, NewTokens.FileName];

    private readonly FileStream _lock;

    private RunFolder(string directory, FileStream @lock)
    {
        Directory = directory;
        _lock = @lock;
    }

    /// <summary>The folder.</summary>
    public string Directory { get; }

    /// <summary>checkpoints/ in it.</summary>
    public string CheckpointRoot => CheckpointFolders.Root(Directory);

    /// <summary>Creates the folder if needed and takes its lock.</summary>
    /// <exception cref="Phi2Exception">The path is a file, or another live run holds the folder.</exception>
    public static RunFolder Acquire(string directory)
    {
        if (File.Exists(directory)) throw new Phi2Exception($"--out '{directory}' is a file; expected a folder (created if missing)");
        System.IO.Directory.CreateDirectory(directory);
        string lockPath = Path.Combine(directory, LockFileName);
        try
        {
            return new RunFolder(directory, new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
        }
        catch (IOException e)
        {
            throw new Phi2Exception($"--out '{directory}' is in use by another fine-tuning run that is still going (it holds {lockPath}); " +
                                    "wait for it to finish or stop it, or choose another --out", e);
        }
    }

    /// <summary>Removes what a checkpoint write killed half-way left; returns what it did, for the run's notices.</summary>
    public IReadOnlyList<string> RemoveHalfMadeCheckpoints() => CheckpointFolders.RemoveHalfMade(CheckpointRoot);

    /// <summary>
    /// Whether the run may start here, checked before anything loads: a new run into a folder holding another run's
    /// checkpoints needs <paramref name="overwrite"/>; a resume from this folder's own checkpoints/step-N continues its
    /// history (then <paramref name="overwrite"/>, which would delete what it resumes from, is refused); a resume from
    /// elsewhere starts a new history here, as a new run does. Returns the step whose history is kept, or null for a
    /// new history.
    /// </summary>
    /// <exception cref="Phi2Exception">The folder holds checkpoints and neither --overwrite nor a resume from them was asked for; or the resume point is not one this folder can continue from.</exception>
    public int? CheckStart(string? resumeFrom, bool overwrite)
    {
        if (resumeFrom is not null)
        {
            string resume = Path.TrimEndingDirectorySeparator(Path.GetFullPath(resumeFrom));
            string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(CheckpointRoot));
            if (Path.GetDirectoryName(resume) == root)
            {
                if (overwrite)
                    throw new Phi2Exception($"--overwrite would delete the checkpoints --resume {resumeFrom} continues from; drop --overwrite to continue this run's history");
                int step = CheckpointFolders.StepOf(Path.GetFileName(resume));
                if (step < 0) throw new Phi2Exception($"--resume {resumeFrom}: expected a checkpoint folder named step-N in {CheckpointRoot}");
                return step;
            }
            if (resume.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new Phi2Exception($"--resume {resumeFrom} is an abandoned checkpoint of this folder's run; copy it elsewhere and resume from the copy, or resume into another --out");
        }
        if (!HoldsCheckpoints() || overwrite) return null;
        throw new Phi2Exception($"--out '{Directory}' holds another run's checkpoints ({CheckpointRoot}); pass --overwrite to clear them and its metrics and adapter first, " +
                                $"--resume {Path.Combine(CheckpointRoot, "step-N")} to continue it, or choose another --out");
    }

    /// <summary>
    /// Puts the folder in order just before training, once everything loaded: for a new history, clears another run's
    /// checkpoints/ and files (what <see cref="CheckStart"/> allowed); for a continued one, moves the checkpoints after
    /// <paramref name="keptStep"/> and a copy of the whole metrics.jsonl to checkpoints/abandoned-&lt;time&gt;/ when
    /// there is anything after it. Returns what it did, for the run's notices.
    /// </summary>
    public IReadOnlyList<string> Begin(int? keptStep, DateTime utcNow)
    {
        var done = new List<string>();
        if (keptStep is not { } step)
        {
            if (System.IO.Directory.Exists(CheckpointRoot) && System.IO.Directory.EnumerateFileSystemEntries(CheckpointRoot).Any())
            {
                System.IO.Directory.Delete(CheckpointRoot, recursive: true);
                foreach (var name in RunFiles) File.Delete(Path.Combine(Directory, name));
                done.Add($"--overwrite: removed the previous run's checkpoints, metrics and adapter from {Directory}");
            }
            return done;
        }
        string metrics = Path.Combine(Directory, MetricsLog.FileName);
        bool laterMetrics = File.Exists(metrics) && MetricsLog.HasLinesAfter(metrics, step);
        string? abandoned = CheckpointFolders.Abandon(CheckpointRoot, step, utcNow, laterMetrics ? [(metrics, MetricsLog.FileName)] : []);
        if (abandoned is not null) done.Add($"the history after step {step} (its later checkpoints and a copy of metrics.jsonl) moved to {abandoned}");
        return done;
    }

    /// <summary>True when checkpoints/ holds anything: another run's history.</summary>
    private bool HoldsCheckpoints() => System.IO.Directory.Exists(CheckpointRoot) && System.IO.Directory.EnumerateFileSystemEntries(CheckpointRoot).Any();

    /// <summary>Releases the lock.</summary>
    public void Dispose() => _lock.Dispose();
}
