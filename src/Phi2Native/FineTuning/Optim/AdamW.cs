using System.Runtime.InteropServices;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Optim;

/// <summary>
/// AdamW with decoupled weight decay over named parameters: torch.optim.AdamW (amsgrad off) as HF's Trainer uses it,
/// every parameter in one <see cref="AdamWOp.Step"/> (one multi-tensor launch on the CUDA backend).
/// </summary>
/// <remarks>
/// <para>State follows torch: each parameter's moments (<c>exp_avg</c>, <c>exp_avg_sq</c>) and its own step count are
/// created at the first step that finds a gradient on it, so a parameter that skipped steps gets torch's bias
/// corrections. Moments are F32 (F64 beside an F64 parameter) on the parameter's backend, whatever the parameter's dtype.</para>
/// <para>The learning rate of the next step is <see cref="LearningRate"/>; a training loop sets it from a
/// <see cref="LearningRateSchedule"/> before each <see cref="Step()"/>, as torch's LambdaLR does.</para>
/// <para>A training step that must not wait for the device uses <see cref="Step(StepStatus)"/>: the update obeys the
/// step's checked status (its clip scale, and its verdict that a non-finite step changes nothing) in device memory,
/// and <see cref="CompleteStep"/> tells the optimizer afterwards what the status said.</para>
/// </remarks>
/// <example><code>
/// using var optimizer = new AdamW(model.Parameters().Where(p => p.RequiresGrad), new AdamWOptions { LearningRate = 2e-4 });
/// var schedule = LearningRateSchedule.CosineWithWarmup(warmupSteps: 10, trainingSteps: 500);
/// // per step: forward, backward, then
/// GradientClipping.ClipGradientsByGlobalNorm(optimizer.Parameters, maxNorm: 1.0);
/// optimizer.LearningRate = optimizer.Options.LearningRate * schedule.Factor(optimizer.StepCount);
/// optimizer.Step();
/// optimizer.ZeroGrad();
/// </code></example>
public sealed class AdamW : IDisposable
{
    /// <summary>Key of the optimizer's step count (<see cref="StepCount"/>) in saved state: an I32 [1].</summary>
    public const string StepKey = "step";

    /// <summary>Prefix of a parameter's first moment in saved state (<c>exp_avg.&lt;HF name&gt;</c>), shaped as the parameter.</summary>
    public const string FirstMomentPrefix = "exp_avg.";

    /// <summary>Prefix of a parameter's second moment in saved state (<c>exp_avg_sq.&lt;HF name&gt;</c>), shaped as the parameter.</summary>
    public const string SecondMomentPrefix = "exp_avg_sq.";

    /// <summary>Prefix of a parameter's own step count in saved state (<c>step.&lt;HF name&gt;</c>): an I32 [1], 0 before its first update.</summary>
    public const string ParameterStepPrefix = "step.";

    private readonly Tensor[] _parameters;
    private readonly MomentState?[] _state;
    private readonly bool[] _decays;
    private double _learningRate;
    private List<int>? _pending;   // the parameters a Step(status) queued, until CompleteStep
    private bool _disposed;

    /// <summary>Creates the optimizer; no state is allocated until a parameter's first update.</summary>
    /// <param name="parameters">The parameters to train, each with a unique <see cref="Tensor.Name"/> (its HF name).</param>
    /// <param name="options">Hyper-parameters; null for torch's defaults.</param>
    /// <exception cref="ArgumentException">No parameters, a parameter without a name, a repeated name, or a non-floating-point parameter.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A hyper-parameter torch.optim.AdamW rejects.</exception>
    public AdamW(IEnumerable<Tensor> parameters, AdamWOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Options = options ?? new AdamWOptions();
        Options.Validate();
        _parameters = parameters.ToArray();
        if (_parameters.Length == 0) throw new ArgumentException("AdamW got an empty parameter list", nameof(parameters));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var parameter in _parameters)
        {
            ArgumentNullException.ThrowIfNull(parameter, nameof(parameters));
            if (string.IsNullOrEmpty(parameter.Name))
                throw new ArgumentException($"AdamW: parameter {parameter} has no name; saved state is keyed by HF names", nameof(parameters));
            if (!names.Add(parameter.Name)) throw new ArgumentException($"AdamW: parameter {parameter.Name} is listed twice", nameof(parameters));
            if (!parameter.DType.IsFloatingPoint()) throw new ArgumentException($"AdamW: parameter {parameter} is not floating-point", nameof(parameters));
        }
        _state = new MomentState?[_parameters.Length];
        _decays = _parameters.Select(p => Options.AppliesWeightDecay(p.Name!)).ToArray();
        _learningRate = Options.LearningRate;
    }

    /// <summary>The hyper-parameters.</summary>
    public AdamWOptions Options { get; }

    /// <summary>The parameters, in the order given.</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <summary>The learning rate the next <see cref="Step()"/> uses; starts at <see cref="AdamWOptions.LearningRate"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative, infinite or NaN value.</exception>
    public double LearningRate
    {
        get => _learningRate;
        set
        {
            if (!NumberChecks.IsFiniteNonNegative(value)) throw new ArgumentOutOfRangeException(nameof(value), value, "the learning rate must be a finite number >= 0");
            _learningRate = value;
        }
    }

    /// <summary>How many times <see cref="Step()"/> has run (restored by <see cref="LoadState"/>); the schedule's step.</summary>
    public int StepCount { get; private set; }

    /// <summary>Whether <paramref name="parameter"/> gets weight decay (by <see cref="AdamWOptions.AppliesWeightDecay"/> on its name).</summary>
    public bool AppliesWeightDecay(Tensor parameter) => Options.AppliesWeightDecay(parameter.Name ?? "");

    /// <summary>
    /// Updates every parameter that has a gradient, in place, at <see cref="LearningRate"/>; parameters whose
    /// <see cref="Tensor.Grad"/> is null are skipped and keep their state, as in torch. Gradients are left as they are.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The optimizer was disposed.</exception>
    /// <exception cref="ArgumentException">A gradient whose shape or dtype does not match its parameter (then nothing is updated).</exception>
    /// <exception cref="InvalidOperationException">A <see cref="Step(StepStatus)"/> is still waiting for <see cref="CompleteStep"/>.</exception>
    public void Step() => Queue(null);

    /// <summary>
    /// Queues the update of <see cref="Step()"/> under a checked status (<see cref="GradientCheckOp.Measure"/>): each
    /// gradient is multiplied by the status's clip scale, and a step the status marks skipped changes nothing, as the
    /// device decides. Counts advance only when <see cref="CompleteStep"/> reports the step applied.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The optimizer was disposed.</exception>
    /// <exception cref="ArgumentException">A gradient that does not match its parameter, or a status on another backend.</exception>
    /// <exception cref="InvalidOperationException">The previous <see cref="Step(StepStatus)"/> was not completed.</exception>
    public void Step(StepStatus status)
    {
        ArgumentNullException.ThrowIfNull(status);
        Queue(status);
    }

    /// <summary>
    /// Completes a <see cref="Step(StepStatus)"/> with what its status read (<see cref="StepStatus.Read"/>): an applied
    /// step advances the step counts (bias corrections), a skipped one leaves every count as it was, as a step torch's
    /// GradScaler skips.
    /// </summary>
    /// <exception cref="InvalidOperationException">No <see cref="Step(StepStatus)"/> is waiting.</exception>
    public void CompleteStep(StepStatusReport report)
    {
        if (_pending is not { } updated) throw new InvalidOperationException("AdamW: no Step(status) is waiting to be completed");
        _pending = null;
        if (!report.Skip) Advance(updated);
    }

    /// <summary>
    /// Queues the update of <see cref="Step(StepStatus)"/> at <paramref name="status"/>'s current block and counts it
    /// applied at once, so that the next queued step uses the next bias corrections; a trainer that reads a window of
    /// steps later calls <see cref="RollBack"/> with what this returns for each step the read shows skipped. Steps
    /// queued this way need no <see cref="CompleteStep"/>.
    /// </summary>
    /// <returns>The indexes of the parameters the step updates (those with a gradient).</returns>
    internal IReadOnlyList<int> StepAhead(StepStatus status)
    {
        ArgumentNullException.ThrowIfNull(status);
        var updated = Queue(status, completeLater: false);
        Advance(updated);
        return updated;
    }

    /// <summary>
    /// Undoes the counts of a <see cref="StepAhead"/> whose step the device skipped (it updated nothing). The steps
    /// after a skipped one in a window are skipped too, so the counts return to those before the first skipped step.
    /// </summary>
    internal void RollBack(IReadOnlyList<int> updated)
    {
        foreach (int i in updated) _state[i]!.Step--;
        StepCount--;
    }

    private List<int> Queue(StepStatus? status, bool completeLater = true)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_pending is not null) throw new InvalidOperationException("AdamW: the previous Step(status) was not completed; call CompleteStep with its status first");
        // Checked up front so that a bad gradient cannot leave the step half applied.
        foreach (var parameter in _parameters)
        {
            if (parameter.Grad is { } gradient && (!gradient.Shape.SequenceEqual(parameter.Shape) || gradient.DType != parameter.DType))
                throw new ArgumentException($"AdamW: the gradient of {parameter.Name} is [{gradient.ShapeText}] {gradient.DType}; the parameter is [{parameter.ShapeText}] {parameter.DType}");
        }
        var tensors = new List<AdamWTensors>(_parameters.Length);
        var updated = new List<int>(_parameters.Length);
        for (int i = 0; i < _parameters.Length; i++)
        {
            var parameter = _parameters[i];
            if (parameter.Grad is not { } gradient) continue;
            var state = _state[i] ??= MomentState.Zeros(parameter);
            tensors.Add(new AdamWTensors(parameter, gradient, state.FirstMoment, state.SecondMoment, Options.StepArguments(_decays[i], LearningRate, state.Step + 1)));
            updated.Add(i);
        }
        AdamWOp.Step(tensors, status);
        if (status is null) Advance(updated);
        else if (completeLater) _pending = updated;
        return updated;
    }

    private void Advance(List<int> updated)
    {
        foreach (int i in updated) _state[i]!.Step++;
        StepCount = checked(StepCount + 1);
    }

    /// <summary>Frees every parameter's gradient (torch's <c>zero_grad(set_to_none=True)</c>).</summary>
    public void ZeroGrad()
    {
        foreach (var parameter in _parameters) parameter.ZeroGrad();
    }

    /// <summary>
    /// A copy of the state, for checkpoints: <see cref="StepKey"/>, and for every parameter <c>exp_avg.&lt;name&gt;</c>,
    /// <c>exp_avg_sq.&lt;name&gt;</c> (F32, or F64 beside an F64 parameter; zeros before its first update) and
    /// <c>step.&lt;name&gt;</c>. Steps are I32 so that they stay exact.
    /// </summary>
    /// <returns>New tensors on the parameters' backend, owned by the caller (or by the current <see cref="TensorScope"/>, like any op's output).</returns>
    public Dictionary<string, Tensor> SaveState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var backend = _parameters[0].Backend;
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal) { [StepKey] = Int32Scalar(backend, StepCount) };
        for (int i = 0; i < _parameters.Length; i++)
        {
            var parameter = _parameters[i];
            string name = parameter.Name!;
            if (_state[i] is { } state)
            {
                result[FirstMomentPrefix + name] = parameter.Backend.Cast(state.FirstMoment, state.FirstMoment.DType);
                result[SecondMomentPrefix + name] = parameter.Backend.Cast(state.SecondMoment, state.SecondMoment.DType);
            }
            else
            {
                result[FirstMomentPrefix + name] = parameter.Backend.Zeros(parameter.Shape, MomentState.DTypeFor(parameter));
                result[SecondMomentPrefix + name] = parameter.Backend.Zeros(parameter.Shape, MomentState.DTypeFor(parameter));
            }
            result[ParameterStepPrefix + name] = Int32Scalar(parameter.Backend, _state[i]?.Step ?? 0);
        }
        return result;
    }

    /// <summary>
    /// Restores state written by <see cref="SaveState"/> (from any backend; moments of any floating dtype are
    /// converted). Every entry must be present and fit; nothing changes unless all do.
    /// </summary>
    /// <param name="state">The entries; they are copied, not taken over.</param>
    /// <exception cref="OptimizerStateException">Entries are missing, mis-shaped, of the wrong type or unexpected: all listed by name.</exception>
    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(state);
        var problems = new List<string>();
        var expected = new HashSet<string>(StringComparer.Ordinal) { StepKey };
        int stepCount = ReadCount(state, StepKey, problems);
        var steps = new int[_parameters.Length];
        foreach (var (parameter, i) in _parameters.Select((p, i) => (p, i)))
        {
            string name = parameter.Name!;
            foreach (var key in new[] { FirstMomentPrefix + name, SecondMomentPrefix + name })
            {
                expected.Add(key);
                if (!state.TryGetValue(key, out var moment)) problems.Add($"missing {key}");
                else if (!moment.Shape.SequenceEqual(parameter.Shape)) problems.Add($"{key}: expected shape [{parameter.ShapeText}], got [{moment.ShapeText}]");
                else if (!moment.DType.IsFloatingPoint()) problems.Add($"{key}: expected a floating-point tensor, got {moment.DType}");
            }
            expected.Add(ParameterStepPrefix + name);
            steps[i] = ReadCount(state, ParameterStepPrefix + name, problems);
        }
        problems.AddRange(state.Keys.Where(k => !expected.Contains(k)).Order(StringComparer.Ordinal).Select(k => $"unexpected {k}"));
        if (problems.Count > 0)
            throw new OptimizerStateException($"AdamW state does not fit the {_parameters.Length} parameters: {string.Join("; ", problems)}");

        var loaded = new MomentState?[_parameters.Length];
        try
        {
            for (int i = 0; i < _parameters.Length; i++)
            {
                if (steps[i] == 0) continue; // never updated: torch has no state for it either
                var parameter = _parameters[i];
                loaded[i] = new MomentState(Copy(state[FirstMomentPrefix + parameter.Name], parameter), Copy(state[SecondMomentPrefix + parameter.Name], parameter)) { Step = steps[i] };
            }
        }
        catch
        {
            foreach (var moments in loaded) moments?.Dispose();
            throw;
        }
        for (int i = 0; i < _state.Length; i++)
        {
            _state[i]?.Dispose();
            _state[i] = loaded[i];
        }
        StepCount = stepCount;
    }

    /// <summary>Frees the moments; the parameters belong to their model.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int i = 0; i < _state.Length; i++)
        {
            _state[i]?.Dispose();
            _state[i] = null;
        }
    }

    private static Tensor Int32Scalar(IBackend backend, int value) =>
        backend.FromBytes(MemoryMarshal.AsBytes(new[] { value }.AsSpan()), DType.I32, [1], DType.I32);

    /// <summary>A one-element non-negative integer count (I32, or a float holding an integer, as torch saves steps); -1 when it does not parse.</summary>
    private static int ReadCount(IReadOnlyDictionary<string, Tensor> state, string key, List<string> problems)
    {
        if (!state.TryGetValue(key, out var tensor)) { problems.Add($"missing {key}"); return -1; }
        if (tensor.ElementCount != 1) { problems.Add($"{key}: expected one element, got [{tensor.ShapeText}]"); return -1; }
        double value = tensor.DType == DType.I32 ? tensor.ToArray<int>()[0] : tensor.Item();
        if (!(value >= 0 && value <= int.MaxValue && value == Math.Floor(value))) { problems.Add($"{key}: expected a count >= 0, got {value}"); return -1; }
        return (int)value;
    }

    /// <summary>A detached copy of a saved moment on <paramref name="parameter"/>'s backend, in the moment dtype.</summary>
    private static Tensor Copy(Tensor source, Tensor parameter)
    {
        var bytes = new byte[source.ElementCount * source.DType.SizeInBytes()];
        source.Backend.CopyToHost(source, bytes);
        return TensorScope.Detach(parameter.Backend.FromBytes(bytes, source.DType, parameter.Shape, MomentState.DTypeFor(parameter)));
    }

    /// <summary>One parameter's moments and its own step count.</summary>
    private sealed class MomentState(Tensor firstMoment, Tensor secondMoment) : IDisposable
    {
        public Tensor FirstMoment { get; } = firstMoment;

        public Tensor SecondMoment { get; } = secondMoment;

        /// <summary>Updates applied so far (torch's state['step']).</summary>
        public int Step { get; set; }

        /// <summary>F32 moments, except F64 ones beside an F64 parameter (double-precision checks).</summary>
        public static DType DTypeFor(Tensor parameter) => parameter.DType == DType.F64 ? DType.F64 : DType.F32;

        /// <summary>Zero moments for <paramref name="parameter"/>; the optimizer owns them, whatever scope is open.</summary>
        public static MomentState Zeros(Tensor parameter)
        {
            var dtype = DTypeFor(parameter);
            return new MomentState(TensorScope.Detach(parameter.Backend.Zeros(parameter.Shape, dtype)), TensorScope.Detach(parameter.Backend.Zeros(parameter.Shape, dtype)));
        }

        public void Dispose()
        {
            FirstMoment.Dispose();
            SecondMoment.Dispose();
        }
    }
}
