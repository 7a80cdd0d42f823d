using System.Diagnostics;

namespace Phi2Native.GpuCheck;

/// <summary>
/// Starts a child process of the runner for the cases from index <paramref name="from"/> on, told to start no case
/// after <paramref name="timeLimit"/> and killed after <paramref name="killAfter"/>; hands over its output lines.
/// </summary>
internal delegate ChildExit ChildLauncher(int from, TimeSpan timeLimit, TimeSpan killAfter, Action<string> stdout, Action<string> stderr);

/// <summary>Hears what a supervised run of children does, case by case.</summary>
internal interface IChildEvents
{
    /// <summary>A child started case <paramref name="index"/>.</summary>
    void Starting(int index, string name);

    /// <summary>Case <paramref name="index"/> ended, was not run, or was charged with its child's crash or hang.</summary>
    void Finished(int index, ChildRecord record);

    /// <summary>A line that is not a record: a child's standard error, stray output, or the supervisor's own note.</summary>
    void Note(string line);
}

/// <summary>
/// Runs a list of cases in child processes so that no fault costs more than the case that caused it: a child that
/// hits a sticky CUDA fault reports the cases after it as "context lost"; a child that crashes or hangs (killed at
/// its time) leaves the case it had started without an end, and that case is charged with it. Either way a fresh
/// child takes over from the next case, while the deadline allows and as long as each child gets at least one
/// case further (so a child that dies at once is not restarted forever).
/// </summary>
internal static class ChildSupervisor
{
    /// <summary>A child is not started with less than this before the deadline (after the grace).</summary>
    public static readonly TimeSpan MinimumChildTime = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Runs <paramref name="cases"/> (names, in the order the children run them) and returns one record per case.
    /// </summary>
    /// <param name="launch">Starts a child (the real one re-runs this program with hidden options).</param>
    /// <param name="deadline">No child starts, and none outlives, this (less <paramref name="grace"/> for its own limit).</param>
    /// <param name="grace">How long a child may run past its own limit (to end the case it is in) before it is killed.</param>
    /// <param name="perChild">The most one child may take (its cases' hang bound), or null for all that is left.</param>
    /// <param name="events">Hears of each case and note as it comes.</param>
    /// <param name="children">How many children were started.</param>
    public static IReadOnlyList<ChildRecord> Run(IReadOnlyList<string> cases, ChildLauncher launch, Deadline deadline, TimeSpan grace,
        TimeSpan? perChild, IChildEvents events, out int children)
    {
        var records = new ChildRecord?[cases.Count];
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < cases.Count; i++) index.TryAdd(cases[i], i);
        children = 0;
        string unfinished = ""; // why the cases left without a record did not run
        bool unfinishedFailed = false;
        while (true)
        {
            int from = Array.FindIndex(records, r => r is null || r.ContextLost);
            if (from < 0) break;
            var left = deadline.Remaining - grace;
            if (left < MinimumChildTime)
            {
                unfinished = $"not run: {deadline.Why}";
                break;
            }
            var limit = perChild is { } cap && cap < left ? cap : left;
            int? current = null;
            var caseWatch = new Stopwatch();
            bool progress = false;
            children++;
            void OnLine(string line)
            {
                var (record, text) = ChildProtocol.Decode(line);
                if (text.Length > 0) events.Note(text);
                if (record is null) return;
                if (!index.TryGetValue(record.Name, out int at) || at < from)
                {
                    events.Note($"(a child reported a case it was not given: '{record.Name}')");
                    return;
                }
                if (record.Event == "start")
                {
                    current = at;
                    caseWatch.Restart();
                    events.Starting(at, record.Name);
                    return;
                }
                records[at] = record;
                if (current == at) current = null;
                progress |= !record.IsNotRun;
                events.Finished(at, record);
            }
            var exit = launch(from, limit, limit + grace, OnLine, events.Note);
            string how = exit.Describe();
            if (current is int culprit)
            {
                // It started this case and never ended it: the crash or the hang is this case's.
                var record = new ChildRecord
                {
                    Event = "end", Name = cases[culprit], Status = nameof(CheckStatus.Threw), TimeMs = caseWatch.Elapsed.TotalMilliseconds,
                    Detail = $"its child process {how} while running it",
                };
                records[culprit] = record;
                progress = true;
                events.Finished(culprit, record);
            }
            else if (!exit.Clean)
            {
                events.Note($"(the child process for '{cases[from]}' and after {how})");
            }
            // Progress means the first case it was given now has an outcome (or lost its context after one that
            // did); a child that ran later cases only, or none, is not restarted: that could go on forever.
            int next = Array.FindIndex(records, r => r is null || r.ContextLost);
            if (!progress || (next >= 0 && next <= from))
            {
                unfinished = progress
                    ? $"its child process {how} without an outcome for '{cases[next]}'"
                    : $"its child process {how} before it ran a case";
                unfinishedFailed = true;
                break;
            }
        }
        for (int i = 0; i < records.Length; i++)
        {
            if (records[i] is not null) continue;
            var record = new ChildRecord
            {
                Event = "end", Name = cases[i], Detail = unfinished,
                Status = unfinishedFailed ? nameof(CheckStatus.Threw) : nameof(CheckStatus.NotRun),
            };
            records[i] = record;
            events.Finished(i, record);
        }
        return records!;
    }
}
