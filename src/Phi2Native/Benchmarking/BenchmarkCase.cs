using Phi2Native.Autograd;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Hosting;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Benchmarking;

/// <summary>
/// A built case: the model (random weights of a config, or a folder's), its adapters and optimizer for the steps, or
/// its KV cache for generation, and one repetition (<see cref="RunOnce"/>) that returns when the device has finished
/// it. The steps are what <c>phi2 finetune</c>'s trainer does per step (FineTuning/Training/Trainer.cs) without the
/// data loader and the non-finite policy: training-mode forward (dropout per the config), loss, backward, the device's
/// step check (losses, global norm, clipping at 1.0) and AdamW, one read of the status block, zeroed gradients.
/// </summary>
internal sealed class BenchmarkCase : IDisposable
{
    private const double MaxGradientNorm = 1.0;

    private readonly BenchmarkOptions _options;
    private readonly Phi2Model _model;
    private readonly LoraModel? _lora;
    private readonly AdamW? _optimizer;
    private readonly StepStatus? _status;
    private readonly IReadOnlyList<Tensor> _trainable = [];
    private readonly KeyValueCache? _cache;
    private readonly int[] _tokens;
    private readonly long _baseParameters;
    private int _decoded;

    public BenchmarkCase(BenchmarkOptions options, Phi2Config config, IBackend backend)
    {
        _options = options;
        _model = options.ModelDirectory is null
            ? new Phi2Model(config, backend, BenchmarkWeights.Tiled(backend, options.Seed, options.DType))
            : ModelSource.LoadModel(options.ModelDirectory, backend, options.DType);
        try
        {
            _baseParameters = _model.Parameters().Sum(p => p.ElementCount);
            var random = new Random(options.Seed + 1);
            int perStep = options.Workload == BenchmarkWorkload.Decode ? options.Sequence + options.Warmup + options.Repeat : options.Sequence;
            _tokens = [.. Enumerable.Range(0, options.Batch * perStep).Select(_ => random.Next(config.VocabSize))];
            switch (options.Workload)
            {
                case BenchmarkWorkload.Train:
                    _model.SetRequiresGrad(true);
                    _trainable = [.. _model.Parameters()];
                    break;
                case BenchmarkWorkload.Lora:
                    var preset = options.ResolvePreset();
                    _lora = LoraModel.Create(_model, TrainingSelection.Build(preset.Modules, [], layers: null, r: options.LoraRank, alpha: 2 * options.LoraRank));
                    _trainable = [.. _lora.TrainableParameters()];
                    break;
                case BenchmarkWorkload.Decode:
                    _cache = new KeyValueCache(_model, options.Batch, perStep);
                    // The prefill the timed tokens follow, untimed.
                    using (TensorScope.Begin()) ReadLogits(_model.ForwardLast(_model.CreateInputIds(Rows(0, options.Sequence), options.Batch), _cache));
                    break;
                case BenchmarkWorkload.Prefill:
                    _cache = new KeyValueCache(_model, options.Batch, options.Sequence);
                    break;
            }
            if (_trainable.Count > 0)
            {
                _model.Training = true;
                _optimizer = new AdamW(_trainable, new AdamWOptions { LearningRate = 2e-4 });
                _status = new StepStatus(backend);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The base model's parameters (adapters not counted).</summary>
    public long Parameters => _baseParameters;

    /// <summary>What a step updates.</summary>
    public long TrainableParameters => _trainable.Sum(p => p.ElementCount);

    /// <summary>Tokens one repetition processes.</summary>
    public long TokensPerRepetition => _options.Workload == BenchmarkWorkload.Decode ? _options.Batch : (long)_options.Batch * _options.Sequence;

    /// <summary>One repetition; returns once the device has finished it.</summary>
    public void RunOnce()
    {
        switch (_options.Workload)
        {
            case BenchmarkWorkload.Train or BenchmarkWorkload.Lora:
                Step();
                break;
            case BenchmarkWorkload.Prefill:
                _cache!.Reset();
                using (TensorScope.Begin()) ReadLogits(_model.ForwardLast(_model.CreateInputIds(Rows(0, _options.Sequence), _options.Batch), _cache));
                break;
            case BenchmarkWorkload.Decode:
                int at = _options.Sequence + _decoded++;
                using (TensorScope.Begin()) ReadLogits(_model.ForwardLast(_model.CreateInputIds(Rows(at, 1), _options.Batch), _cache!));
                break;
        }
    }

    private void Step()
    {
        // As the trainer's step: backward, then the check (losses, global norm, clip scale) and AdamW queued behind it
        // on the device, and one read of the status block.
        Tensor loss;
        using (TensorScope.Begin())
        using (var tape = GradientTape.Begin())
        {
            // lm_head and the loss in chunks of rows, as the trainer runs them.
            loss = _model.ForwardLoss(_model.CreateInputIds(_tokens, _options.Batch), _tokens);
            tape.Backward(loss);
            loss = TensorScope.Detach(loss);
        }
        using (loss)
        {
            GradientCheckOp.Measure([.. _trainable.Select(p => p.Grad)], [loss], MaxGradientNorm, _status!);
            _optimizer!.Step(_status!);
            _optimizer.CompleteStep(_status!.Read());
        }
        _optimizer.ZeroGrad();
        WaitForDevice();
    }

    /// <summary>Positions [from, from + count) of every row, row after row: ids [B * count].</summary>
    private int[] Rows(int from, int count)
    {
        int perRow = _tokens.Length / _options.Batch;
        var ids = new int[_options.Batch * count];
        for (int row = 0; row < _options.Batch; row++) _tokens.AsSpan(row * perRow + from, count).CopyTo(ids.AsSpan(row * count));
        return ids;
    }

    /// <summary>Copies the logits [B, V] to the host, as generation does to sample; the copy waits for the device.</summary>
    private void ReadLogits(Tensor logits)
    {
        var bytes = new byte[logits.ElementCount * logits.DType.SizeInBytes()];
        _model.Backend.CopyToHost(logits, bytes);
    }

    /// <summary>
    /// Returns when the device has finished the work queued so far: a one-element tensor made and read back on the
    /// backend's stream waits for everything before it (a no-op's cost on the CPU, whose ops are synchronous).
    /// </summary>
    private void WaitForDevice()
    {
        using var probe = _model.Backend.Zeros([1], DType.F32);
        Span<byte> bytes = stackalloc byte[4];
        _model.Backend.CopyToHost(probe, bytes);
    }

    public void Dispose()
    {
        _cache?.Dispose();
        _status?.Dispose();
        _optimizer?.Dispose();
        _lora?.Dispose();
        _model.Dispose();
    }
}
