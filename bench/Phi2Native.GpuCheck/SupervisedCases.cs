namespace Phi2Native.GpuCheck;

/// <summary>
/// The parent's side of a stage run in children: <see cref="ChildSupervisor"/> over the cases, each record turned
/// back into an outcome and printed as the in-process run would print it.
/// </summary>
internal static class SupervisedCases
{
    /// <summary>
    /// Runs <paramref name="names"/> through children from <paramref name="launch"/> and returns their outcomes, in
    /// order; <paramref name="toOutcome"/> turns a case's record (by index) into its outcome.
    /// </summary>
    public static IReadOnlyList<TOutcome> Run<TOutcome>(IReadOnlyList<string> names, ChildLauncher launch, Deadline deadline, TimeSpan grace,
        TimeSpan? perChild, Func<int, ChildRecord, TOutcome> toOutcome, ConsoleProgress<TOutcome> progress, out int children)
    {
        var events = new Events<TOutcome>(toOutcome, progress);
        var records = ChildSupervisor.Run(names, launch, deadline, grace, perChild, events, out children);
        return [.. records.Select((r, i) => toOutcome(i, r))];
    }

    /// <summary>The child's arguments for a time limit (whole tenths of a second, invariant).</summary>
    public static string Seconds(TimeSpan limit) => Math.Max(0.1, Math.Floor(limit.TotalSeconds * 10) / 10).ToString(System.Globalization.CultureInfo.InvariantCulture);

    private sealed class Events<TOutcome>(Func<int, ChildRecord, TOutcome> toOutcome, ConsoleProgress<TOutcome> progress) : IChildEvents
    {
        public void Starting(int index, string name) => progress.Starting(index, name);

        public void Finished(int index, ChildRecord record) => progress.Finished(index, record.Name, toOutcome(index, record), record.Trace);

        public void Note(string line) => progress.Note(line);
    }
}
