using System.Text;
using System.Text.Json;
using Phi2Native.FineTuning.Training;

namespace Phi2Native.Hosting;

/// <summary>
/// metrics.jsonl: one JSON object per line, for a training step (<c>Step, Epoch, Loss, learning_rate, gradient_norm,
/// Tokens, Seconds</c>), a skipped step (<c>Step, skipped</c>: what was not finite) or a validation pass (<c>Step, validation_loss,
/// validation_perplexity, validation_tokens</c>). Every line is valid JSON: a number that is not finite is written
/// as null. It keeps the whole run's history in memory too, read back from the file when a run resumes in its folder.
/// </summary>
internal sealed class MetricsLog : IDisposable
{
    public const string FileName = "metrics.jsonl";

    private readonly StreamWriter _writer;
    private readonly List<StepMetrics> _steps = [];
    private readonly List<EvaluationMetrics> _evaluations = [];

    private MetricsLog(StreamWriter writer) => _writer = writer;

    /// <summary>Training steps of the whole run, in order.</summary>
    public IReadOnlyList<StepMetrics> Steps => _steps;

    /// <summary>Validation passes of the whole run, in order.</summary>
    public IReadOnlyList<EvaluationMetrics> Evaluations => _evaluations;

    /// <summary>
    /// Opens the file of <paramref name="directory"/>: empty for a new history, or, with <paramref name="keepThroughStep"/>,
    /// cut back to the lines of steps up to that one (rewritten in one rename; lines that are not valid JSON, such as a
    /// line a killed process left half-written, are dropped and said through <paramref name="warn"/>), whose records
    /// become the history new lines are appended to.
    /// </summary>
    public static MetricsLog Open(string directory, int? keepThroughStep, int totalSteps, Action<string>? warn)
    {
        string path = Path.Combine(directory, FileName);
        var kept = new List<string>();
        var log = new List<JsonElement>();
        if (keepThroughStep is { } last && File.Exists(path))
        {
            int lineNumber = 0;
            foreach (var line in File.ReadLines(path))
            {
                lineNumber++;
                if (line.Length == 0) continue;
                JsonElement record;
                try
                {
                    record = JsonDocument.Parse(line).RootElement.Clone();
                }
                catch (JsonException)
                {
                    warn?.Invoke($"{path}:{lineNumber}: not valid JSON (a line cut off when a run was killed?); dropped");
                    continue;
                }
                if (record.ValueKind != JsonValueKind.Object || !record.TryGetProperty("Step", out var step) || !step.TryGetInt32(out int n) || n > last) continue;
                kept.Add(line);
                log.Add(record);
            }
        }
        string temporary = path + ".tmp";
        File.WriteAllLines(temporary, kept);
        File.Move(temporary, path, overwrite: true);
        var metrics = new MetricsLog(new StreamWriter(path, append: true, new UTF8Encoding(false)));
        foreach (var record in log) metrics.Remember(record, totalSteps);
        return metrics;
    }

    /// <summary>True when the file has a line of a step after <paramref name="step"/> (what a resume from that step cuts away).</summary>
    public static bool HasLinesAfter(string path, int step)
    {
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var record = JsonDocument.Parse(line);
                if (record.RootElement.ValueKind == JsonValueKind.Object && record.RootElement.TryGetProperty("Step", out var n) && n.TryGetInt32(out int value) && value > step)
                    return true;
            }
            catch (JsonException)
            {
                // A line cut off by a kill is not a step of the history; Open drops it.
            }
        }
        return false;
    }

    public void Write(StepMetrics m)
    {
        _steps.Add(m);
        WriteLine(w =>
        {
            w.WriteNumber("Step", m.Step);
            w.WriteNumber("Epoch", m.Epoch);
            Number(w, "Loss", m.Loss);
            Number(w, "learning_rate", m.LearningRate);
            Number(w, "gradient_norm", m.GradientNorm);
            w.WriteNumber("Tokens", m.Tokens);
            Number(w, "Seconds", m.Seconds);
        });
    }

    public void Write(SkippedStep skipped) => WriteLine(w =>
    {
        w.WriteNumber("Step", skipped.Value.Step);
        w.WriteString("skipped", skipped.Value.What);
    });

    public void Write(EvaluationMetrics m)
    {
        _evaluations.Add(m);
        WriteLine(w =>
        {
            w.WriteNumber("Step", m.Step);
            Number(w, "validation_loss", m.Loss);
            Number(w, "validation_perplexity", m.Perplexity);
            w.WriteNumber("validation_tokens", m.Tokens);
        });
    }

    public void Dispose() => _writer.Dispose();

    // JSON has no NaN or infinity: such a value is written as null, so the line stays valid.
    private static void Number(Utf8JsonWriter writer, string name, double value)
    {
        if (double.IsFinite(value)) writer.WriteNumber(name, value);
        else writer.WriteNull(name);
    }

    private void WriteLine(Action<Utf8JsonWriter> body)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            body(writer);
            writer.WriteEndObject();
        }
        _writer.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
        _writer.Flush();
    }

    private void Remember(JsonElement record, int totalSteps)
    {
        static double Read(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : double.NaN;
        static long ReadLong(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
        int step = record.GetProperty("Step").GetInt32();
        if (record.TryGetProperty("Loss", out _))
            _steps.Add(new StepMetrics(step, totalSteps, (int)ReadLong(record, "Epoch"), Read(record, "Loss"), Read(record, "learning_rate"),
                Read(record, "gradient_norm"), ReadLong(record, "Tokens"), Read(record, "Seconds")));
        else if (record.TryGetProperty("validation_loss", out _))
            _evaluations.Add(new EvaluationMetrics(step, Read(record, "validation_loss"), ReadLong(record, "validation_tokens")));
    }
}
