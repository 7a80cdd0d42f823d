using System.Diagnostics;
using Phi2Native.Hosting;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Benchmarking;

/// <summary>
/// Runs benchmark cases for hosts and harnesses (<c>phi2 bench</c> is this plus printing): builds the case, runs the
/// warm-up repetitions, then the measured ones, each timed on the wall clock until the device has finished it, and
/// reports the times, tokens/s and the tensors' memory (<see cref="IBackend.Memory"/>; its peak is reset after the
/// warm-up, so it is the measured repetitions' own).
/// </summary>
/// <example><code>
/// var result = Benchmark.Run(new BenchmarkOptions { Workload = BenchmarkWorkload.Lora, Config = "phi2", Layers = 2, Batch = 1, Sequence = 128 });
/// Console.WriteLine(result.ToJson());
/// </code></example>
public static class Benchmark
{
    /// <summary>Runs one case on the backend of <see cref="BenchmarkOptions.Device"/> and <see cref="BenchmarkOptions.DType"/>, opened for it and closed after.</summary>
    /// <param name="options">What to run; checked first (<see cref="BenchmarkOptions.Validate"/>).</param>
    /// <param name="progress">Hears the fraction done (0 to 1) after the setup and after each repetition.</param>
    /// <param name="warn">Receives non-fatal remarks about a model folder's files.</param>
    /// <param name="cancellationToken">Stops between repetitions.</param>
    /// <exception cref="Phi2Exception">A value is out of range, the combination is refused, or the device cannot be opened (the message names the option).</exception>
    public static BenchmarkResult Run(BenchmarkOptions options, IProgress<double>? progress = null, Action<string>? warn = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        using var compute = ComputeBackend.Open(options.Device, options.DType, Use(options.Workload));
        return Run(options, compute, progress, warn, cancellationToken);
    }

    /// <summary>
    /// Runs one case on <paramref name="compute"/> (left open; <see cref="ComputeBackend.Over"/> wraps a host's own backend),
    /// in its dtype: <see cref="BenchmarkOptions.Device"/> and <see cref="BenchmarkOptions.DType"/> are not read.
    /// </summary>
    /// <exception cref="Phi2Exception">A value is out of range or the combination is refused (the message names the option).</exception>
    public static BenchmarkResult Run(BenchmarkOptions options, ComputeBackend compute, IProgress<double>? progress = null, Action<string>? warn = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(compute);
        options = options with { Device = compute.Device, DType = compute.DType };
        var config = options.ResolveConfig(warn);
        ComputeBackend.Check(compute.Device, compute.DType, Use(options.Workload));
        var backend = compute.Backend;
        var setup = Stopwatch.StartNew();
        using var benchmarkCase = new BenchmarkCase(options, config, backend);
        double setupSeconds = setup.Elapsed.TotalSeconds;
        int total = options.Warmup + options.Repeat, done = 0;
        progress?.Report(0);
        (double H100, double H200)? modelled = null;
        for (int i = 0; i < options.Warmup; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            // The first warm-up repetition is recorded for the roofline model: the costs its launches declare are a
            // measured repetition's (the same shapes), and recording never slows a measured one.
            if (i == 0 && compute.Device.Kind != DeviceKind.Cpu) modelled = Modelled(benchmarkCase);
            else benchmarkCase.RunOnce();
            progress?.Report(++done / (double)total);
        }
        long resident = backend.Memory.BytesInUse;
        backend.ResetPeakMemory();
        var times = new List<double>(options.Repeat);
        for (int i = 0; i < options.Repeat; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long start = Stopwatch.GetTimestamp();
            benchmarkCase.RunOnce();
            times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            progress?.Report(++done / (double)total);
        }
        long peak = backend.Memory.PeakBytesInUse;
        bool lora = options.Workload == BenchmarkWorkload.Lora;
        return new BenchmarkResult
        {
            Workload = options.Workload,
            Device = compute.Device.ToString(),
            DeviceDescription = compute.Description,
            DType = ComputeDTypes.Name(options.DType),
            Model = options.ModelName(),
            Layers = config.NumHiddenLayers,
            HiddenSize = config.HiddenSize,
            Parameters = benchmarkCase.Parameters,
            TrainableParameters = benchmarkCase.TrainableParameters,
            Batch = options.Batch,
            Sequence = options.Sequence,
            Preset = lora ? options.ResolvePreset().Name : null,
            LoraRank = lora ? options.LoraRank : null,
            Warmup = options.Warmup,
            Times = new BenchmarkTimes(times),
            TokensPerRepetition = benchmarkCase.TokensPerRepetition,
            ResidentBytes = resident,
            PeakBytes = Math.Max(peak, resident),
            SetupSeconds = setupSeconds,
            ModelledH100Ms = modelled?.H100,
            ModelledH200Ms = modelled?.H200,
        };
    }

    /// <summary>One repetition under the profiler, priced by the roofline model on an H100 SXM and an H200 (milliseconds, modelled).</summary>
    private static (double H100, double H200) Modelled(BenchmarkCase benchmarkCase)
    {
        var events = ProfileRecorder.Record(benchmarkCase.RunOnce);
        return (new RooflineModel(GpuFigures.H100).Milliseconds(events), new RooflineModel(GpuFigures.H200).Milliseconds(events));
    }

    private static ComputeUse Use(BenchmarkWorkload workload) =>
        workload is BenchmarkWorkload.Train or BenchmarkWorkload.Lora ? ComputeUse.Training : ComputeUse.Inference;
}
