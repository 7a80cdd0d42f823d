using System.Text.Json;
using System.Text.Json.Serialization;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>
/// One line a child process of the runner writes on its standard output about one case (a check or a benchmark):
/// that it starts (<see cref="Event"/> "start"), or how it ended ("end"). The parent reads these to know which case a
/// child was in when it crashed or hung, and to rebuild the outcomes it prints.
/// </summary>
internal sealed record ChildRecord
{
    /// <summary>"start" or "end".</summary>
    public required string Event { get; init; }

    /// <summary>The case's name (a check's, or a benchmark case's).</summary>
    public required string Name { get; init; }

    /// <summary>With "end": the <see cref="CheckStatus"/> or <see cref="BenchStatus"/> name ("NotRun" and "Threw" are both's).</summary>
    public string Status { get; init; } = "";

    /// <summary>With "end": the outcome's detail line.</summary>
    public string Detail { get; init; } = "";

    /// <summary>With "end": wall milliseconds of the case.</summary>
    public double TimeMs { get; init; }

    /// <summary>The sticky CUDA error the case threw (<see cref="StickyFault"/>), or null.</summary>
    public string? Fault { get; init; }

    /// <summary>Not run because an earlier case's sticky fault killed the child's context.</summary>
    public bool ContextLost { get; init; }

    /// <summary>The full exception when the case threw.</summary>
    public string? Trace { get; init; }

    /// <summary>A check's comparison, when its body returned one.</summary>
    public CheckResult? Result { get; init; }

    /// <summary>A benchmark case's row, when it is one.</summary>
    public BenchOutcome? Bench { get; init; }

    /// <summary>True for an "end" record that says the case did not start.</summary>
    [JsonIgnore]
    public bool IsNotRun => Status == nameof(CheckStatus.NotRun);

    /// <summary>The "start" record of <paramref name="name"/>.</summary>
    public static ChildRecord Start(string name) => new() { Event = "start", Name = name };

    /// <summary>The "end" record of a check.</summary>
    public static ChildRecord Of(CheckOutcome o, string? trace) => new()
    {
        Event = "end", Name = o.Check.Name, Status = o.Status.ToString(), Detail = o.Detail, TimeMs = o.Time.TotalMilliseconds,
        Fault = o.Fault, ContextLost = o.ContextLost, Trace = trace, Result = o.Result,
    };

    /// <summary>The "end" record of a benchmark case.</summary>
    public static ChildRecord Of(BenchOutcome o, string? trace) => new()
    {
        Event = "end", Name = o.Name, Status = o.Status.ToString(), Detail = o.Detail, Fault = o.Fault, ContextLost = o.ContextLost,
        Trace = trace, Bench = o,
    };

    /// <summary>The check outcome this record describes (<paramref name="check"/> is the check it names).</summary>
    public CheckOutcome ToCheck(DeviceCheck check) =>
        new(check, Enum.TryParse(Status, out CheckStatus status) ? status : CheckStatus.Threw, Result, TimeSpan.FromMilliseconds(TimeMs), Detail)
        {
            Fault = Fault, ContextLost = ContextLost,
        };

    /// <summary>The benchmark outcome this record describes.</summary>
    public BenchOutcome ToBench() =>
        Bench is { } b && b.Name == Name && Status == b.Status.ToString()
            ? b
            : new BenchOutcome(Name, "-", "-", Enum.TryParse(Status, out BenchStatus status) ? status : BenchStatus.Threw, 0, 0, "", 0, Detail)
            {
                Fault = Fault, ContextLost = ContextLost,
            };
}

/// <summary>
/// How <see cref="ChildRecord"/>s travel: one JSON object per line after <see cref="Prefix"/>, on the child's
/// standard output, among whatever else is printed there (native libraries, compute-sanitizer's reports).
/// </summary>
internal static class ChildProtocol
{
    /// <summary>What starts a record line (anything before it on the line is someone else's output).</summary>
    public const string Prefix = "##phi2native-child ";

    /// <summary>The line for <paramref name="record"/>.</summary>
    public static string Encode(ChildRecord record) => Prefix + JsonSerializer.Serialize(record, ChildJson.Default.ChildRecord);

    /// <summary>
    /// Splits a line of a child's output: the record it carries (or null), and the text that is not a record ("" when
    /// none). A line whose JSON does not parse is returned whole as text.
    /// </summary>
    public static (ChildRecord? Record, string Text) Decode(string line)
    {
        int at = line.IndexOf(Prefix, StringComparison.Ordinal);
        if (at < 0) return (null, line);
        try
        {
            var record = JsonSerializer.Deserialize(line.AsSpan(at + Prefix.Length), ChildJson.Default.ChildRecord);
            return record is null ? (null, line) : (record, line[..at]);
        }
        catch (JsonException)
        {
            return (null, line);
        }
    }

    /// <summary>Writes each record to <paramref name="output"/> as soon as it is known (the observer of a child's cases).</summary>
    public sealed class Writer<TOutcome>(TextWriter output, Func<TOutcome, string?, ChildRecord> toRecord) : ICaseObserver<TOutcome>
    {
        /// <inheritdoc/>
        public void Starting(int index, string name) => Write(ChildRecord.Start(name));

        /// <inheritdoc/>
        public void Finished(int index, string name, TOutcome outcome, string? trace) => Write(toRecord(outcome, trace));

        private void Write(ChildRecord record)
        {
            // One WriteLine of the whole line, flushed: the parent must see "start" before a hang or a crash.
            output.WriteLine(Encode(record));
            output.Flush();
        }
    }
}

/// <summary>The records' JSON, generated at build time (the runner is trimmed; no reflection). Infinity travels as "Infinity".</summary>
[JsonSourceGenerationOptions(NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ChildRecord))]
internal sealed partial class ChildJson : JsonSerializerContext;
