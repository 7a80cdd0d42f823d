using System.Diagnostics;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Optimizer;
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
    private string? _lastCheckpoint;
    private int _lastCheckpointStep = -1;
    private long _lastSaveTimestamp;
    private readonly StepStatus _status;   // a window of steps' checks, written and obeyed on the device, read in one copy

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
        _status = new StepStatus(Optimizer.Parameters[0].Backend, options.MetricsEvery);
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

    /// <summary>Optimizer steps done, skipped ones included (continues from a restored checkpoint).</summary>
    public int Step { get; internal set; }

    /// <summary>Steps skipped so far for a non-finite loss or gradient (<see cref="TrainingOptions.SkipNonFiniteSteps"/>); part of every checkpoint.</summary>
    public int SkippedSteps { get; internal set; }

    /// <summary>True once a checkpoint was restored into this trainer: its history already holds the validations at its step.</summary>
    internal bool Restored { get; set; }

    /// <summary>Adds files to each checkpoint before its manifest is written (e.g. the tokenizer's added tokens), given the checkpoint's folder.</summary>
    internal Action<string>? CheckpointExtras { get; set; }

    /// <summary>The clock of <see cref="TrainingOptions.SaveEveryMinutes"/> (tests give one they advance).</summary>
    internal TimeProvider Time { get; set; } = TimeProvider.System;

    /// <summary>
    /// Raised after every optimizer step that updated, when its status is read: after each step, or for each step of a
    /// window of <see cref="TrainingOptions.MetricsEvery"/> steps in order when the window is read.
    /// </summary>
    public event Action<StepMetrics>? StepCompleted;

    /// <summary>Raised after every validation pass.</summary>
    public event Action<EvaluationMetrics>? Evaluated;

    /// <summary>Raised after every checkpoint, with its folder.</summary>
    public event Action<string>? CheckpointSaved;

    /// <summary>Raised after a step that updated nothing because a value was not finite (<see cref="TrainingOptions.SkipNonFiniteSteps"/>).</summary>
    public event Action<SkippedStep>? StepSkipped;

    /// <summary>
    /// Trains until <see cref="TotalSteps"/>, validating and saving as the options say. Every step's loss and gradient
    /// norm are checked (<see cref="NonFinitePolicy"/>): a step with a value that is not finite updates nothing, and is
    /// skipped while <see cref="TrainingOptions.SkipNonFiniteSteps"/> allows, or ends the run
    /// (<see cref="TrainingStop.NonFinite"/>) with a checkpoint of the state before it when that state is finite. On
    /// cancellation it finishes the steps queued (the current step; cancellation ends a window of
    /// <see cref="TrainingOptions.MetricsEvery"/> steps early), writes a checkpoint and returns (<see cref="TrainingStop.Cancelled"/>).
    /// A run that completes writes a final checkpoint. The model is left in evaluation mode.
    /// </summary>
    public TrainingResult Run(CancellationToken cancellation = default)
    {
        var model = _lora.Model;
        var parameters = Optimizer.Parameters;
        var policy = new NonFinitePolicy(_options.SkipNonFiniteSteps, SkippedSteps);
        // Training time only: validation passes and checkpoints are not part of tokens/s or of "seconds of training".
        var clock = new Stopwatch();
        int startStep = Step, epochOfLastEvaluation = _training.Order.Epoch;
        _lastSaveTimestamp = Time.GetTimestamp();
        if (Step == 0 && !Restored && _validation != null) Evaluated?.Invoke(Evaluate());
        var window = new List<QueuedStep>(_options.MetricsEvery);
        while (Step < TotalSteps)
        {
            if (cancellation.IsCancellationRequested)
            {
                model.Training = false;
                if (_lastCheckpointStep != Step && !TrySaveCheckpoint(out var overflowed))
                    return new TrainingResult(Step, TrainingStop.NonFinite, _lastCheckpoint, overflowed, SkippedSteps);
                return new TrainingResult(Step, TrainingStop.Cancelled, _lastCheckpoint, null, SkippedSteps);
            }
            // A window of steps queued without a wait, then its status blocks read in one copy (TrainingOptions.MetricsEvery).
            clock.Start();
            model.Training = true;
            window.Clear();
            do window.Add(QueueStep(window.Count));
            while (!WindowEnds(window.Count, epochOfLastEvaluation, cancellation));
            var reports = _status.ReadWindow(window.Count);
            clock.Stop();
            for (int i = 0; i < window.Count; i++)
            {
                var (queued, status) = (window[i], reports[i]);
                double meanLoss = status.LossSum / Math.Max(queued.MicroBatches, 1);
                var norms = GlobalNorm.Of(status);
                var verdict = policy.Judge(Step + 1, meanLoss, norms, index => LoraModel.PeftKey(parameters[index]), out var nonFinite);
                if ((verdict == NonFinitePolicy.Verdict.Update) == status.Skip)
                    throw new InvalidOperationException($"step {Step + 1}: the device {(status.Skip ? "skipped" : "applied")} the update but the non-finite policy says {verdict}; please report");
                // The device skipped this step and halted the rest of the window: none of them counts for the bias corrections.
                if (verdict != NonFinitePolicy.Verdict.Update)
                    for (int j = window.Count - 1; j >= i; j--) Optimizer.RollBack(window[j].Updated);
                if (verdict == NonFinitePolicy.Verdict.Stop)
                {
                    model.Training = false;
                    SaveLastGoodState(queued.Before);
                    return new TrainingResult(Step, TrainingStop.NonFinite, _lastCheckpoint, nonFinite, SkippedSteps);
                }
                Step++;
                if (verdict == NonFinitePolicy.Verdict.Skip)
                {
                    SkippedSteps = policy.Skipped;
                    StepSkipped?.Invoke(new SkippedStep(nonFinite!, policy.Skipped, policy.AllowedSkips));
                }
                else StepCompleted?.Invoke(new StepMetrics(Step, TotalSteps, queued.Epoch, meanLoss, queued.LearningRate, norms.Norm, queued.Tokens, clock.Elapsed.TotalSeconds));
                if (i + 1 < window.Count)
                {
                    // Validations and saves fall only on a window's last step (WindowEnds). After a skipped step the rest
                    // of the window was halted, not judged: its inputs are put back and it runs again, as with a window of 1.
                    if (verdict == NonFinitePolicy.Verdict.Update) continue;
                    TrainingCheckpoint.RestoreInputs(this, window[i + 1].Before);
                    break;
                }
                bool epochEnded = _training.Order.Epoch != epochOfLastEvaluation;
                if (_validation != null && (_options.EvaluateEvery > 0 ? Step % _options.EvaluateEvery == 0 : epochEnded) && Step < TotalSteps)
                {
                    epochOfLastEvaluation = _training.Order.Epoch;
                    Evaluated?.Invoke(Evaluate());
                }
                if (Step < TotalSteps && ((_options.SaveEvery > 0 && Step % _options.SaveEvery == 0) || SaveIsDueByTime()) && !TrySaveCheckpoint(out var bad))
                {
                    model.Training = false;
                    return new TrainingResult(Step, TrainingStop.NonFinite, _lastCheckpoint, bad, SkippedSteps);
                }
            }
        }
        // A run resumed from its own final checkpoint trains nothing: its last validation is already in its history.
        if (_validation != null && (Step > startStep || !Restored)) Evaluated?.Invoke(Evaluate());
        model.Training = false;
        return TrySaveCheckpoint(out var last)
            ? new TrainingResult(Step, TrainingStop.Completed, _lastCheckpoint, null, SkippedSteps)
            : new TrainingResult(Step, TrainingStop.NonFinite, _lastCheckpoint, last, SkippedSteps);
    }

    /// <summary>One queued step of a window, until its status block is read.</summary>
    /// <param name="Before">The trainer's state before the step: its checkpoint should the step not be finite, and the inputs to re-run it from.</param>
    /// <param name="Updated">The parameters whose counts <see cref="AdamW.StepAhead"/> advanced.</param>
    /// <param name="MicroBatches">Micro-batches the step took.</param>
    /// <param name="Tokens">Input tokens of those micro-batches.</param>
    /// <param name="Epoch">The epoch its data came from.</param>
    /// <param name="LearningRate">The rate it used.</param>
    private sealed record QueuedStep(TrainingCheckpoint.State Before, IReadOnlyList<int> Updated, int MicroBatches, long Tokens, int Epoch, double LearningRate);

    // Queues step Step + block + 1 into status block `block`: forward and backward of its micro-batches, the check and
    // the update (obeying the check, and halted when the window's previous step was skipped), without a host wait.
    private QueuedStep QueueStep(int block)
    {
        var model = _lora.Model;
        int step = Step + block;
        // No step before this one in the window was skipped (the window is re-run from a skipped one), so the skip
        // count is the trainer's.
        var before = TrainingCheckpoint.Capture(this) with { Step = step };
        double learningRate = _options.LearningRate * _schedule.Factor(step);
        int microBatches = 0, epoch = _training.Order.Epoch;
        long tokens = 0;
        var losses = new List<Tensor>(_options.GradientAccumulation);
        IReadOnlyList<int> updated;
        try
        {
            while (microBatches < _options.GradientAccumulation && _training.Order.BatchesTaken < _totalMicroBatches)
            {
                var batch = _training.Next();
                using var scope = TensorScope.Begin();
                using var tape = GradientTape.Begin();
                // lm_head and the loss in chunks of rows: the [B x T, V] logits never exist whole.
                var loss = model.ForwardLoss(model.CreateInputIds(batch.InputIds, batch.BatchSize), batch.Labels);
                // Each micro-batch's mean loss counts 1/accumulation, as HF's Trainer does.
                tape.Backward(ScaleOp.Apply(loss, 1.0 / _options.GradientAccumulation));
                losses.Add(TensorScope.Detach(loss));
                tokens += batch.InputIds.Length;
                microBatches++;
            }
            // The step's check and update are queued behind backward, into the window's block for this step (the
            // losses, the norm, the first non-finite gradient, whether the device skipped the update).
            _status.Current = block;
            GradientCheckOp.Measure(Optimizer.Parameters.Select(p => p.Grad).ToList(), losses, Math.Max(_options.MaxGradientNorm, 0), _status);
            Optimizer.LearningRate = learningRate;
            updated = Optimizer.StepAhead(_status);
        }
        finally
        {
            foreach (var loss in losses) loss.Dispose();
        }
        Optimizer.ZeroGrad();
        return new QueuedStep(before, updated, microBatches, tokens, epoch, learningRate);
    }

    // After `queued` steps of a window: read now when the window is full, at the run's last step, or when the step
    // just queued is due a validation or a save, or the run is cancelled (each needs the step's state in memory).
    private bool WindowEnds(int queued, int epochOfLastEvaluation, CancellationToken cancellation)
    {
        int step = Step + queued;
        return queued >= _options.MetricsEvery || step >= TotalSteps || _training.Order.BatchesTaken >= _totalMicroBatches
            || cancellation.IsCancellationRequested
            || (_validation != null && (_options.EvaluateEvery > 0 ? step % _options.EvaluateEvery == 0 : _training.Order.Epoch != epochOfLastEvaluation))
            || (_options.SaveEvery > 0 && step % _options.SaveEvery == 0) || SaveIsDueByTime();
    }

    // No checkpoint ever holds a parameter that is not finite: an update can overflow one while the step's loss and
    // gradient were finite. Such a parameter ends the run instead, keeping the checkpoints before it.
    private bool TrySaveCheckpoint(out NonFiniteValue? nonFinite)
    {
        var parameters = Optimizer.Parameters;
        var values = GlobalNorm.OfValues(parameters);
        nonFinite = values.IsFinite ? null
            : values.FirstNonFinite >= 0 ? new NonFiniteValue(Step, NonFiniteQuantity.Parameter, LoraModel.PeftKey(parameters[values.FirstNonFinite]), values.FirstNonFiniteValue)
            : new NonFiniteValue(Step, NonFiniteQuantity.Parameter, "(their sum of squares overflowed)", values.Norm);
        if (nonFinite is not null) return false;
        SaveCheckpoint();
        return true;
    }

    private bool SaveIsDueByTime() =>
        _options.SaveEveryMinutes > 0 && Time.GetElapsedTime(_lastSaveTimestamp).TotalMinutes >= _options.SaveEveryMinutes;

    // The step that was not finite updated nothing, so the adapter and optimizer are still those of the state before
    // it: written as that step's checkpoint unless it is on disk already, or unless the parameters themselves are not
    // finite (an earlier step's update overflowed them), which no checkpoint should carry.
    private void SaveLastGoodState(TrainingCheckpoint.State before)
    {
        string directory = CheckpointFolders.OfStep(OutputDirectory, before.Step);
        if (_lastCheckpointStep == before.Step || Directory.Exists(directory)) return;
        if (!GlobalNorm.OfValues(Optimizer.Parameters).IsFinite) return;
        SaveCheckpoint(before);
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
            var loss = model.ForwardLoss(model.CreateInputIds(batch.InputIds, batch.BatchSize), batch.Labels);
            lossSum += loss.Item() * targets;
            scored += targets;
        }
        model.Training = wasTraining;
        return new EvaluationMetrics(Step, scored == 0 ? double.NaN : lossSum / scored, scored);
    }

    /// <summary>
    /// Writes checkpoints/step-N/ (adapter, optimizer, trainer state, manifest) atomically and returns its folder; then,
    /// with <see cref="TrainingOptions.KeepCheckpoints"/>, removes the oldest beyond that many.
    /// </summary>
    public string SaveCheckpoint() => SaveCheckpoint(null);

    private string SaveCheckpoint(TrainingCheckpoint.State? state)
    {
        int step = state?.Step ?? Step;
        string directory = TrainingCheckpoint.Save(this, CheckpointFolders.OfStep(OutputDirectory, step), state, CheckpointExtras);
        _lastCheckpoint = directory;
        _lastCheckpointStep = step;
        _lastSaveTimestamp = Time.GetTimestamp();
        if (_options.KeepCheckpoints is { } keep) CheckpointFolders.Prune(CheckpointFolders.Root(OutputDirectory), keep, directory);
        CheckpointSaved?.Invoke(directory);
        return directory;
    }

    /// <summary>Frees the optimizer's state.</summary>
    public void Dispose()
    {
        Optimizer.Dispose();
        _status.Dispose();
    }

    // Position t is scored when labels[t + 1] is not ignored: the shift CausalLanguageModelLoss and ForwardLoss apply.
    private static int CountTargets(TrainingBatch batch)
    {
        int count = 0;
        for (int b = 0; b < batch.BatchSize; b++)
            for (int t = 1; t < batch.Time; t++)
                if (batch.Labels[b * batch.Time + t] != TokenizedExample.IgnoreLabel) count++;
        return count;
    }
}
