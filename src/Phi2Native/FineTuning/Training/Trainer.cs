using System.Diagnostics;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Determinism;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Training;

/// <summary>
/// Fine-tunes the trainable tensors of a <see cref="LoraModel"/> (adapters and modules trained in full): AdamW with
/// warmup and decay, clipping by global norm, gradient accumulation, periodic validation and checkpoints.
/// </summary>
/// <remarks>
/// A run is repeatable bit for bit from its seeds on the CPU backend, and a run resumed from a checkpoint
/// (<see cref="TrainingCheckpoint"/>) continues with exactly the losses the uninterrupted run would have had: the
/// checkpoint holds the adapter, the optimizer's moments, the data order's cursor and the dropout counters.
/// </remarks>
public sealed class Trainer : IDisposable
{
    private readonly LoraModel _lora;
    private readonly BatchLoader _training;
    private readonly TrainingRows? _validation;
    private readonly TrainingOptions _options;
    private readonly LearningRateSchedule _schedule;
    private readonly long _totalMicroBatches;

    /// <summary>Sets up a run; <paramref name="outputDirectory"/> receives checkpoints/step-N/.</summary>
    public Trainer(LoraModel lora, BatchLoader training, TrainingRows? validation, TrainingOptions options, string outputDirectory)
    {
        options.Validate();
        _lora = lora;
        _training = training;
        _validation = validation;
        _options = options;
        OutputDirectory = outputDirectory;
        _totalMicroBatches = (long)options.Epochs * training.BatchesPerEpoch;
        int stepsForEpochs = (int)Math.Min(int.MaxValue, (_totalMicroBatches + options.GradientAccumulation - 1) / options.GradientAccumulation);
        TotalSteps = options.MaxSteps is { } max ? Math.Min(max, stepsForEpochs) : stepsForEpochs;
        _schedule = options.Decay switch
        {
            LearningRateDecay.Linear => LearningRateSchedule.LinearWithWarmup(options.WarmupSteps, TotalSteps),
            LearningRateDecay.Constant => LearningRateSchedule.ConstantWithWarmup(options.WarmupSteps),
            _ => LearningRateSchedule.CosineWithWarmup(options.WarmupSteps, TotalSteps),
        };
        Optimizer = new AdamW(lora.TrainableParameters(), new AdamWOptions { LearningRate = options.LearningRate, WeightDecay = options.WeightDecay });
        var model = lora.Model;
        model.DropoutSeed = Seeds.Derive((ulong)options.Seed, SeedPurpose.ModelDropout, 0);
        model.TrainingForwardCount = 0;
        model.ResidualDropoutOverride = options.ResidualDropout;
        for (int i = 0; i < lora.LinearAdapters.Count; i++)
        {
            lora.LinearAdapters[i].DropoutSeed = Seeds.Derive(model.DropoutSeed, SeedPurpose.AdapterDropout, i);
            lora.LinearAdapters[i].TrainingForwardCount = 0;
        }
    }

    /// <summary>The model being trained.</summary>
    public LoraModel Model => _lora;

    /// <summary>The optimizer (its state is part of every checkpoint).</summary>
    public AdamW Optimizer { get; }

    /// <summary>The training batches; their order's cursor is part of every checkpoint.</summary>
    public BatchLoader Batches => _training;

    /// <summary>Where checkpoints go.</summary>
    public string OutputDirectory { get; }

    /// <summary>Optimizer steps the run takes in all.</summary>
    public int TotalSteps { get; }

    /// <summary>Optimizer steps done (continues from a restored checkpoint).</summary>
    public int Step { get; internal set; }

    /// <summary>Raised after every optimizer step.</summary>
    public event Action<StepMetrics>? StepCompleted;

    /// <summary>Raised after every validation pass.</summary>
    public event Action<EvaluationMetrics>? Evaluated;

    /// <summary>Raised after every checkpoint, with its folder.</summary>
    public event Action<string>? CheckpointSaved;

    /// <summary>
    /// Trains until <see cref="TotalSteps"/>, validating and saving as the options say; on cancellation it finishes the
    /// current step, writes a checkpoint and returns with Interrupted set. A final checkpoint is always written, and the
    /// model is left in evaluation mode.
    /// </summary>
    public TrainingResult Run(CancellationToken cancellation = default)
    {
        var model = _lora.Model;
        // Training time only: validation passes and checkpoints are not part of tokens/s or of "seconds of training".
        var clock = new Stopwatch();
        string? lastCheckpoint = null;
        int epochOfLastEvaluation = _training.Order.Epoch;
        if (Step == 0 && _validation != null) Evaluated?.Invoke(Evaluate());
        while (Step < TotalSteps)
        {
            if (cancellation.IsCancellationRequested)
            {
                model.Training = false;
                lastCheckpoint = SaveCheckpoint();
                return new TrainingResult(Step, Interrupted: true, lastCheckpoint);
            }
            clock.Start();
            Optimizer.LearningRate = _options.LearningRate * _schedule.Factor(Optimizer.StepCount);
            double learningRate = Optimizer.LearningRate, lossSum = 0;
            int microBatches = 0, epoch = _training.Order.Epoch;
            long tokens = 0;
            model.Training = true;
            while (microBatches < _options.GradientAccumulation && _training.Order.BatchesTaken < _totalMicroBatches)
            {
                var batch = _training.Next();
                using var scope = TensorScope.Begin();
                using var tape = GradientTape.Begin();
                var logits = model.Forward(model.CreateInputIds(batch.InputIds, batch.BatchSize));
                var loss = model.CausalLanguageModelLoss(logits, batch.Labels);
                // Each micro-batch's mean loss counts 1/accumulation, as HF's Trainer does.
                tape.Backward(ScaleOp.Apply(loss, 1.0 / _options.GradientAccumulation));
                lossSum += loss.Item();
                tokens += batch.InputIds.Length;
                microBatches++;
            }
            var parameters = Optimizer.Parameters;
            double norm = _options.MaxGradientNorm > 0
                ? GradientClipping.ClipGradientsByGlobalNorm(parameters, _options.MaxGradientNorm)
                : Math.Sqrt(parameters.Where(p => p.Grad != null).Sum(p => p.Backend.SumOfSquares(p.Grad!)));
            Optimizer.Step();
            Optimizer.ZeroGrad();
            clock.Stop();
            Step++;
            StepCompleted?.Invoke(new StepMetrics(Step, TotalSteps, epoch, lossSum / Math.Max(microBatches, 1), learningRate, norm, tokens, clock.Elapsed.TotalSeconds));
            bool epochEnded = _training.Order.Epoch != epochOfLastEvaluation;
            if (_validation != null && (_options.EvaluateEvery > 0 ? Step % _options.EvaluateEvery == 0 : epochEnded) && Step < TotalSteps)
            {
                epochOfLastEvaluation = _training.Order.Epoch;
                Evaluated?.Invoke(Evaluate());
            }
            if (_options.SaveEvery > 0 && Step % _options.SaveEvery == 0 && Step < TotalSteps) lastCheckpoint = SaveCheckpoint();
        }
        if (_validation != null) Evaluated?.Invoke(Evaluate());
        lastCheckpoint = SaveCheckpoint();
        model.Training = false;
        return new TrainingResult(Step, Interrupted: false, lastCheckpoint);
    }

    /// <summary>Mean loss per scored token over the validation rows, in evaluation mode (no dropout, no tape).</summary>
    public EvaluationMetrics Evaluate()
    {
        if (_validation is null) throw new InvalidOperationException("this run has no validation data");
        var model = _lora.Model;
        bool wasTraining = model.Training;
        model.Training = false;
        var loader = new BatchLoader(_validation, new DataOrder(_validation.Count, _training.Order.BatchSize, seed: 0, shuffle: false));
        double lossSum = 0;
        long scored = 0;
        foreach (var batch in loader.RestOfEpoch())
        {
            int targets = CountTargets(batch);
            if (targets == 0) continue;
            using var scope = TensorScope.Begin();
            var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(batch.InputIds, batch.BatchSize)), batch.Labels);
            lossSum += loss.Item() * targets;
            scored += targets;
        }
        model.Training = wasTraining;
        return new EvaluationMetrics(Step, scored == 0 ? double.NaN : lossSum / scored, scored);
    }

    /// <summary>Writes checkpoints/step-N/ (adapter, optimizer, trainer state) atomically and returns its folder.</summary>
    public string SaveCheckpoint()
    {
        string directory = TrainingCheckpoint.Save(this, Path.Combine(OutputDirectory, "checkpoints", $"step-{Step}"));
        CheckpointSaved?.Invoke(directory);
        return directory;
    }

    /// <summary>Frees the optimizer's state.</summary>
    public void Dispose() => Optimizer.Dispose();

    // Position t is scored when labels[t + 1] is not ignored: the shift CausalLanguageModelLoss applies.
    private static int CountTargets(TrainingBatch batch)
    {
        int count = 0;
        for (int b = 0; b < batch.BatchSize; b++)
            for (int t = 1; t < batch.Time; t++)
                if (batch.Labels[b * batch.Time + t] != TokenizedExample.IgnoreLabel) count++;
        return count;
    }
}
