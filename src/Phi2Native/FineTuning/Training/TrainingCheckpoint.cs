using System.Text.Json;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Training;

/// <summary>
/// A training checkpoint folder: the adapter (PEFT layout, loadable on its own), <c>optimizer.safetensors</c> (AdamW's
/// moments and step counts), <c>trainer_state.json</c> (step, data-order cursor, dropout counters, skipped steps) and
/// <c>manifest.json</c> (each file's size and SHA-256, checked on resume). Written into a temporary folder and renamed,
/// so a crash never leaves a half-written checkpoint or loses the previous one.
/// </summary>
internal static class TrainingCheckpoint
{
    /// <summary>The optimizer state file.</summary>
    public const string OptimizerFileName = "optimizer.safetensors";

    /// <summary>The trainer state file.</summary>
    public const string StateFileName = "trainer_state.json";

    /// <summary>The state that, with the adapter and optimizer files, resumes a run exactly.</summary>
    /// <param name="Step">Optimizer steps done (skipped ones included).</param>
    /// <param name="TotalSteps">Steps the run takes in all.</param>
    /// <param name="DataOrder">The data order's cursor.</param>
    /// <param name="ModelDropoutSeed">The model's dropout seed.</param>
    /// <param name="ModelTrainingForwards">The model's training forwards so far (with the seed, its next dropout masks).</param>
    /// <param name="AdapterDropoutSeeds">Each Linear adapter's dropout seed.</param>
    /// <param name="AdapterTrainingForwards">Each Linear adapter's training forwards so far.</param>
    /// <param name="SkippedSteps">Steps skipped for a non-finite value so far (absent, so 0, in checkpoints written before steps could be skipped).</param>
    public sealed record State(int Step, int TotalSteps, DataOrderState DataOrder, ulong ModelDropoutSeed, long ModelTrainingForwards,
        ulong[] AdapterDropoutSeeds, long[] AdapterTrainingForwards, int SkippedSteps = 0);

    /// <summary>True when <paramref name="directory"/> holds a training checkpoint (not just an adapter).</summary>
    public static bool IsCheckpoint(string directory) => File.Exists(Path.Combine(directory, StateFileName));

    /// <summary>The trainer's state now: what a checkpoint written now records.</summary>
    internal static State Capture(Trainer trainer)
    {
        var model = trainer.Model.Model;
        var adapters = trainer.Model.LinearAdapters;
        return new State(trainer.Step, trainer.TotalSteps, trainer.Batches.Order.Save(), model.DropoutSeed, model.TrainingForwardCount,
            adapters.Select(a => a.DropoutSeed).ToArray(), adapters.Select(a => a.TrainingForwardCount).ToArray(), trainer.SkippedSteps);
    }

    /// <summary>
    /// Writes a checkpoint of <paramref name="trainer"/>'s adapter and optimizer with <paramref name="state"/> (the
    /// trainer's own now, or one captured when the adapter and optimizer were last as they are), plus what
    /// <paramref name="writeExtras"/> adds, then its manifest; all into a temporary folder that is renamed into place.
    /// </summary>
    internal static string Save(Trainer trainer, string directory, State? state = null, Action<string>? writeExtras = null)
    {
        state ??= Capture(trainer);
        string parent = Path.GetDirectoryName(Path.GetFullPath(directory))!;
        Directory.CreateDirectory(parent);
        string temporary = Path.Combine(parent, $".{Path.GetFileName(directory)}.tmp-{Guid.NewGuid():N}");
        try
        {
            PeftAdapter.Save(trainer.Model, temporary);
            var writer = new SafeTensorsWriter();
            var optimizerState = trainer.Optimizer.SaveState();
            try
            {
                foreach (var (name, tensor) in optimizerState.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    var bytes = new byte[tensor.ElementCount * tensor.DType.SizeInBytes()];
                    tensor.Backend.CopyToHost(tensor, bytes);
                    writer.Add(name, tensor.DType, Array.ConvertAll(tensor.Shape.ToArray(), d => (long)d), bytes);
                }
            }
            finally
            {
                foreach (var tensor in optimizerState.Values) tensor.Dispose();
            }
            writer.Save(Path.Combine(temporary, OptimizerFileName));
            File.WriteAllText(Path.Combine(temporary, StateFileName), JsonSerializer.Serialize(state, FineTuningJson.Default.State));
            writeExtras?.Invoke(temporary);
            CheckpointManifest.Write(temporary);
            Replace(temporary, directory);
            return directory;
        }
        catch
        {
            if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// Puts a trainer built over the checkpoint's adapter (loaded with <see cref="PeftAdapter.Load"/>) and the same data
    /// and options back where the checkpoint was taken: step, optimizer state, data cursor, dropout counters.
    /// </summary>
    /// <remarks>The files are checked against the checkpoint's <see cref="CheckpointManifest"/> first; one without a manifest is said through <paramref name="warn"/>.</remarks>
    /// <exception cref="Phi2Exception">A file is missing, damaged (sizes or hashes differ from the manifest) or does not fit the run (the message names it).</exception>
    public static void Restore(Trainer trainer, string directory, Action<string>? warn = null) => Restore(trainer, directory, warn, verified: false);

    /// <summary>As the public overload; <paramref name="verified"/> says the caller has checked the manifest already (it hashes every file).</summary>
    internal static void Restore(Trainer trainer, string directory, Action<string>? warn, bool verified)
    {
        string statePath = Path.Combine(directory, StateFileName), optimizerPath = Path.Combine(directory, OptimizerFileName);
        if (!File.Exists(statePath) || !File.Exists(optimizerPath))
            throw new Phi2Exception($"'{directory}' is not a training checkpoint: it needs {StateFileName} and {OptimizerFileName} (an adapter folder alone cannot resume a run)");
        if (!verified && !CheckpointManifest.Verify(directory))
            warn?.Invoke($"{directory} has no {CheckpointManifest.FileName} (written by an older version): its files cannot be checked");
        State state;
        try
        {
            state = JsonSerializer.Deserialize(File.ReadAllText(statePath), FineTuningJson.Default.State) ?? throw new Phi2Exception($"{statePath}: empty");
        }
        catch (JsonException e)
        {
            throw new Phi2Exception($"{statePath}: not a valid trainer state ({e.Message})", e);
        }
        var adapters = trainer.Model.LinearAdapters;
        if (state.AdapterDropoutSeeds.Length != adapters.Count || state.AdapterTrainingForwards.Length != adapters.Count)
            throw new Phi2Exception($"{statePath}: it records {state.AdapterDropoutSeeds.Length} Linear adapters, the run has {adapters.Count}");
        var backend = trainer.Model.Model.Backend;
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using (var file = SafeTensorsFile.Open(optimizerPath))
                foreach (var info in file.Tensors)
                    tensors[info.Name] = TensorScope.Detach(backend.FromBytes(file.GetBytes(info.Name), info.DType ?? throw new Phi2Exception($"{optimizerPath}: {info.Name} has dtype {info.DTypeName}"),
                        Array.ConvertAll(info.Shape, d => (int)d), info.DType.Value));
            trainer.Optimizer.LoadState(tensors);
        }
        finally
        {
            foreach (var tensor in tensors.Values) tensor.Dispose();
        }
        RestoreInputs(trainer, state);
        trainer.Step = state.Step;
        trainer.SkippedSteps = state.SkippedSteps;
        trainer.Restored = true;
    }

    /// <summary>
    /// Puts back what decides the next step's inputs: the data order's cursor and the dropout seeds and counters
    /// (not the step, the skip count, the adapter or the optimizer).
    /// </summary>
    internal static void RestoreInputs(Trainer trainer, State state)
    {
        var adapters = trainer.Model.LinearAdapters;
        trainer.Batches.Order.Restore(state.DataOrder);
        var model = trainer.Model.Model;
        model.DropoutSeed = state.ModelDropoutSeed;
        model.TrainingForwardCount = state.ModelTrainingForwards;
        for (int i = 0; i < adapters.Count; i++)
        {
            adapters[i].DropoutSeed = state.AdapterDropoutSeeds[i];
            adapters[i].TrainingForwardCount = state.AdapterTrainingForwards[i];
        }
    }

    // Swap the finished folder in: the old checkpoint of the same step (a rerun) goes only after the new one is in place.
    private static void Replace(string temporary, string directory)
    {
        string? old = null;
        if (Directory.Exists(directory))
        {
            old = directory + $".old-{Guid.NewGuid():N}";
            Directory.Move(directory, old);
        }
        Directory.Move(temporary, directory);
        if (old != null) Directory.Delete(old, recursive: true);
    }
}
