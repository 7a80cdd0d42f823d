using System.Text.Json.Serialization;
using Phi2Native.FineTuning.Training;

namespace Phi2Native.FineTuning;

/// <summary>
/// Source-generated JSON for the files fine-tuning writes and reads back (trainer_state.json, a checkpoint's manifest.json, added_tokens.json).
/// Reflection-based <c>JsonSerializer</c> calls are what a trimmed self-contained build cannot prove safe; the
/// generated metadata needs no reflection, and the output is byte for byte what the reflection serializer wrote with
/// the same options (indented, snake_case property names; dictionary keys are never renamed).
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(TrainingCheckpoint.State))]
[JsonSerializable(typeof(CheckpointManifest.Contents))]
[JsonSerializable(typeof(Dictionary<string, int>))]
internal sealed partial class FineTuningJson : JsonSerializerContext;
