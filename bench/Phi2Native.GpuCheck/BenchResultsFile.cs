using System.Text.Json;

namespace Phi2Native.GpuCheck;

/// <summary>
/// The benchmark stage's results as JSON, for the peer scripts of the same run (bench/peers/gpu_peers.py reads it, given
/// as <c>--ours FILE</c>): <c>{"device", "sizes", "cases": [{"name", "status", "shape", "dtype", "ms", "rate", "unit",
/// "reps", "detail"}]}</c>, status <c>Ran</c>, <c>Threw</c> or <c>NotRun</c>, ms the median per repetition.
/// </summary>
internal static class BenchResultsFile
{
    /// <summary>Writes <paramref name="outcomes"/> to a new file in the temporary folder; returns its path.</summary>
    public static string Write(string device, BenchSizes sizes, IReadOnlyList<BenchOutcome> outcomes)
    {
        string path = Path.Combine(Path.GetTempPath(), $"phi2native-bench-{Environment.ProcessId}.json");
        // Written field by field: the runner is trimmed, and reflection-based serialization is not trim-safe.
        using var stream = File.Create(path);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("device", device);
        json.WriteString("sizes", sizes.Label);
        json.WriteStartArray("cases");
        foreach (var o in outcomes)
        {
            json.WriteStartObject();
            json.WriteString("name", o.Name);
            json.WriteString("status", o.Status.ToString());
            json.WriteString("shape", o.Shape);
            json.WriteString("dtype", o.DType);
            Number(json, "ms", o.Ms);
            Number(json, "rate", o.Rate);
            Number(json, "modelled_ms", o.ModelledMs);
            json.WriteString("unit", o.Unit);
            json.WriteNumber("reps", o.Reps);
            json.WriteString("detail", o.Detail);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
        return path;
    }

    /// <summary>A finite number, else null (JSON has no NaN or infinity).</summary>
    private static void Number(Utf8JsonWriter json, string name, double value)
    {
        if (double.IsFinite(value)) json.WriteNumber(name, value);
        else json.WriteNull(name);
    }
}
