using System.Text.Json;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Training;

/// <summary>
/// A training checkpoint folder: the adapter (PEFT layout, loadable on its own), <c>optimizer.safetensors</c> (AdamW's
/// moments and step counts) and <c>trainer_state.json</c> (step, data-order cursor, dropout counters). Written into a
/// temporary folder and renamed, so a crash never leaves a half-written checkpoint or loses the previous one.
/// </summary>
public static class TrainingCheckpoint
{
    /// <summary>The optimizer state file.</summary>
    public const string OptimizerFileName = "optimizer.safetensors";

    /// <summary>The trainer state file.</summary>
    public const string StateFileName = "trainer_state.json";

    /// <summary>The state that, with the adapter and optimizer files, resumes a run exactly.</summary>
    public sealed record State(int Step, int TotalSteps, DataOrderState DataOrder, ulong ModelDropoutSeed, long ModelTrainingForwards,
        ulong[] AdapterDropoutSeeds, long[] AdapterTrainingForwards);

    /// <summary>True when <paramref name="directory"/> holds a training checkpoint (not just an adapter).</summary>
    public static bool IsCheckpoint(string directory) => File.Exists(Path.Combine(directory, StateFileName));

    internal static string Save(Trainer trainer, string directory)
    {
        string parent = Path.GetDirectoryName(Path.GetFullPath(directory))!;
        Directory.CreateDirectory(parent);
        string temporary = Path.Combine(parent, $".{Path.GetFileName(directory)}.tmp-{Guid.NewGuid():N}");
        try
        {
            PeftAdapter.Save(trainer.Model, temporary);
            var writer = new SafeTensorsWriter();
            var state = trainer.Optimizer.SaveState();
            try
            {
                foreach (var (name, tensor) in state.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    var bytes = new byte[tensor.ElementCount * tensor.DType.SizeInBytes()];
                    tensor.Backend.CopyToHost(tensor, bytes);
                    writer.Add(name, tensor.DType, Array.ConvertAll(tensor.Shape.ToArray(), d => (long)d), bytes);
                }
            }
            finally
            {
                foreach (var tensor in state.Values) tensor.Dispose();
            }
            writer.Save(Path.Combine(temporary, OptimizerFileName));
            var model = trainer.Model.Model;
            var adapters = trainer.Model.LinearAdapters;
            var trainerState = new State(trainer.Step, trainer.TotalSteps, trainer.Batches.Order.Save(), model.DropoutSeed, model.TrainingForwardCount,
                adapters.Select(a => a.DropoutSeed).ToArray(), adapters.Select(a => a.TrainingForwardCount).ToArray());
            File.WriteAllText(Path.Combine(temporary, StateFileName), JsonSerializer.Serialize(trainerState, FineTuningJson.Default.State));
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
    /// <exception cref="Phi2Exception">A file is missing or does not fit the run (the message says which).</exception>
    public static void Restore(Trainer trainer, string directory)
    {
        string statePath = Path.Combine(directory, StateFileName), optimizerPath = Path.Combine(directory, OptimizerFileName);
        if (!File.Exists(statePath) || !File.Exists(optimizerPath))
            throw new Phi2Exception($"'{directory}' is not a training checkpoint: it needs {StateFileName} and {OptimizerFileName} (an adapter folder alone cannot resume a run)");
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
        trainer.Batches.Order.Restore(state.DataOrder);
        trainer.Step = state.Step;
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
