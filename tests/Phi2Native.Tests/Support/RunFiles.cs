using System.Text.Json;

namespace Phi2Native.Tests.Support;

/// <summary>Small training data and readers of a `phi2 finetune` output folder, for the run-lifecycle tests.</summary>
internal static class RunFiles
{
    /// <summary>Options of a fast run on the embedded model: tiny batches, a constant rate (so the number of steps changes no step's rate), no validation.</summary>
    public static readonly string[] Fast = ["--batch-size", "2", "--max-length", "32", "--schedule", "constant", "--lr", "3e-3", "--seed", "7", "--dropout", "0.1"];

    /// <summary>Writes a JSONL file of <paramref name="lines"/> short texts from the embedded model's book, each different.</summary>
    public static string Data(string folder, int lines = 12)
    {
        string path = Path.Combine(folder, "data.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, lines).Select(i =>
            $"{{\"text\": \"And it came to pass on the {i} day, that God said unto Moses, Go thou and speak unto the children of Israel.\"}}"));
        return path;
    }

    /// <summary>Every line of metrics.jsonl, parsed (the parse fails the test for a line that is not valid JSON).</summary>
    public static List<JsonElement> Metrics(string run) =>
        File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(line => JsonDocument.Parse(line).RootElement.Clone()).ToList();

    /// <summary>The training lines' (Step, Loss), in file order.</summary>
    public static List<(int Step, double Loss)> Losses(string run) =>
        Metrics(run).Where(m => m.TryGetProperty("Loss", out _)).Select(m => (m.GetProperty("Step").GetInt32(), m.GetProperty("Loss").GetDouble())).ToList();

    /// <summary>The step-N folders of checkpoints/, as N.</summary>
    public static int[] CheckpointSteps(string run) =>
        !Directory.Exists(Path.Combine(run, "checkpoints")) ? [] :
        Directory.GetDirectories(Path.Combine(run, "checkpoints"), "step-*").Select(d => int.Parse(Path.GetFileName(d)["step-".Length..])).Order().ToArray();

    /// <summary>The bytes of every file of an adapter folder's weights, for bit-for-bit comparisons.</summary>
    public static byte[] AdapterBytes(string folder) => File.ReadAllBytes(Path.Combine(folder, "adapter_model.safetensors"));
}
