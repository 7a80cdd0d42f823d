using System.Diagnostics;
using System.Runtime.InteropServices;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Benchmarking;
using Phi2Native.Cuda;
using Phi2Native.Hosting;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.GpuCheck;

/// <summary>The sizes the cases run at: Phi-2's real ones on a GPU, tiny ones on the emulator (CI).</summary>
/// <param name="Tokens">Rows of the Linear, LayerNorm and gelu cases, and the attention cases' T (B = 1).</param>
/// <param name="Model">The config of the model cases (the training steps cut it to 1 and 2 layers).</param>
/// <param name="Prefill">Tokens prefilled into the KV cache before decode steps are timed.</param>
/// <param name="Reps">Timed repetitions at most per case (the emulator needs few: its times mean nothing).</param>
/// <param name="NewTokens">Tokens the greedy decoding cases generate after the prefill (the GPU peers' decode has the same).</param>
/// <param name="LoraStep">The LoRA step case: what `phi2 bench lora` runs (the GPU peers' PEFT step has its shape).</param>
internal sealed record BenchSizes(string Label, int Tokens, Phi2Config Model, int Prefill, int Reps, int NewTokens, BenchmarkOptions LoraStep)
{
    /// <summary>Phi-2: C 2560, H 32, D 80, intermediate 10240, V 51200, 32 layers; 2048 tokens; the LoRA step at B 4, T 2048.</summary>
    public static BenchSizes Phi2 { get; } = new("Phi-2", 2048, Phi2Config.Phi2, 2000, Benchmarks.MaxReps, 32,
        new BenchmarkOptions { Workload = BenchmarkWorkload.Lora, Config = "phi2", Batch = 4, Sequence = 2048, Repeat = 3, Warmup = 1 });

    /// <summary>
    /// Small enough for the emulator to run every case in seconds, with Phi-2's head size and rotary dims (D 80,
    /// rotary 32) so the same kernel paths run: C 160, H 2, intermediate 640, V 512, 2 layers; 32 tokens.
    /// </summary>
    public static BenchSizes Tiny { get; } = new("tiny", 32,
        Phi2Config.Tiny with { HiddenSize = 160, NumAttentionHeads = 2, IntermediateSize = 640, RotaryDim = 32, NumHiddenLayers = 2 }, 24, 2, 4,
        new BenchmarkOptions { Workload = BenchmarkWorkload.Lora, Config = "embedded", Layers = 2, Batch = 1, Sequence = 32, Repeat = 1, Warmup = 1 });
}

/// <summary>
/// The benchmark cases: cuBLAS(Lt) Linears, attention, LayerNorm, gelu, a Phi-2-sized training step and
/// KV-cache decoding, all through <see cref="CudaBackend"/> in BF16 (fp32 accumulation and softmax). Each case is
/// timed with device events on the backend's stream (<see cref="IDeviceApi.RecordEvent"/> around one repetition,
/// <see cref="IDeviceApi.ElapsedMilliseconds"/>) after warm-up, and reports the median of a few repetitions; each
/// case stops repeating after <see cref="PerCase"/>. How the stage runs them is in Benchmarks.Run.cs.
/// </summary>
internal sealed partial class Benchmarks
{
    /// <summary>Warm-up repetitions (the first also compiles the kernels it launches, and fills the allocator's cache).</summary>
    public const int WarmUp = 2;

    /// <summary>Timed repetitions at most; the median is reported.</summary>
    public const int MaxReps = 10;

    /// <summary>How long one case may keep repeating (it always times at least one repetition).</summary>
    public static readonly TimeSpan PerCase = TimeSpan.FromSeconds(3);

    private const DType Dt = DType.BF16;
    private const string DtName = "bf16 (fp32 acc)";

    private readonly CudaBackend _backend;
    private readonly BenchSizes _sizes;

    private Benchmarks(CudaBackend backend, BenchSizes sizes)
    {
        _backend = backend;
        _sizes = sizes;
        _model = new RooflineModel(backend.DeviceApi.Name.Contains("H200", StringComparison.OrdinalIgnoreCase) ? GpuFigures.H200 : GpuFigures.H100);
    }

    /// <summary>The roofline model of the GPU the cases run on: an H200's figures on an H200, an H100 SXM's elsewhere.</summary>
    private readonly RooflineModel _model;

    /// <summary>The last timed case's modelled milliseconds (<see cref="Time"/>), until <see cref="TakeModelledMs"/> takes it.</summary>
    private double _modelledMs = double.NaN;

    /// <summary>The modelled milliseconds of the case that just ran (NaN when it recorded none), cleared for the next.</summary>
    public double TakeModelledMs()
    {
        double ms = _modelledMs;
        _modelledMs = double.NaN;
        return ms;
    }

    /// <param name="Needs">Time the case needs at least at Phi-2 sizes: it is not started with less left (a child killed in
    /// it past its grace would count as a failure, not as the budget's doing).</param>
    private sealed record Case(string Name, Func<Benchmarks, BenchOutcome> Run, TimeSpan Needs = default);

    /// <summary>The cases, cheapest and most telling first; the full-model decode (the biggest build) last.</summary>
    private static readonly Case[] Cases =
    [
        new("linear q/k/v/dense (LtMatmul BIAS)", b => b.LinearForward(b.C, b.C, bias: true)),
        new("linear qkv fused (LtMatmul BIAS)", b => b.LinearForward(b.C, 3 * b.C, bias: true)),
        new("linear fc1 (LtMatmul BIAS)", b => b.LinearForward(b.C, b.Inner, bias: true)),
        new("linear fc1 (GemmEx, no bias)", b => b.LinearForward(b.C, b.Inner, bias: false)),
        new("linear fc1 in F32 (LtMatmul BIAS)", b => b.LinearForward(b.C, b.Inner, bias: true, DType.F32)),
        new("linear fc2 (LtMatmul BIAS)", b => b.LinearForward(b.Inner, b.C, bias: true)),
        new("linear backward q/k/v/dense (dx, dW)", b => b.LinearBackward(b.C, b.C)),
        new("linear backward fc1 (dx, dW)", b => b.LinearBackward(b.C, b.Inner)),
        new("linear backward fc2 (dx, dW)", b => b.LinearBackward(b.Inner, b.C)),
        new("attention forward (causal)", b => b.AttentionForward()),
        new("attention backward (causal)", b => b.AttentionBackward()),
        new("cached attention decode", b => b.CachedAttentionDecode()),
        new("layernorm forward", b => b.LayerNormForward()),
        new("layernorm backward (dx, dW, dB)", b => b.LayerNormBackward()),
        new("gelu_new forward", b => b.Gelu(backward: false)),
        new("gelu_new backward", b => b.Gelu(backward: true)),
        new("fc1 + gelu_new (LinearGelu, pre saved)", b => b.LinearGelu(backward: false)),
        new("fc1 + gelu_new backward (LinearGelu: dgelu+db, dx, dW)", b => b.LinearGelu(backward: true)),
        new("training step, 1 layer", b => b.TrainingStep(1)),
        new("training step, 2 layers", b => b.TrainingStep(2)),
        new("decoder layer forward+backward", b => b.LayerStep()),
        new("model prefill (KV cache, last logits)", b => b.Generation(prefillOnly: true)),
        new("model decode step (KV cache)", b => b.Generation(prefillOnly: false)),
        new(GreedyDecodeEagerName, b => b.GreedyDecode(cudaGraphs: false)),
        new(GreedyDecodeGraphName, b => b.GreedyDecode(cudaGraphs: true)),
        // A 32-layer model built and stepped 3 times at B 4, T 2048 (guessed; no GPU run has timed it yet).
        new(LoraStepName, b => b.LoraStep(), TimeSpan.FromSeconds(40)),
    ];

    /// <summary>The LoRA step's name, which bench/peers/gpu_peers.py looks up in the results file.</summary>
    public const string LoraStepName = "LoRA step (phi2 bench lora)";

    /// <summary>The names of the cases, in the order they run.</summary>
    public static IEnumerable<string> CaseNames => Cases.Select(c => c.Name);

    // ---- sizes ----

    private int N => _sizes.Tokens;
    private int C => _sizes.Model.HiddenSize;
    private int Inner => _sizes.Model.IntermediateSize;
    private int Heads => _sizes.Model.NumAttentionHeads;
    private int HeadDim => _sizes.Model.HeadDim;

    // ---- cases ----

    private BenchOutcome LinearForward(int inFeatures, int outFeatures, bool bias, DType dtype = Dt)
    {
        using var x = Random([N, inFeatures], 1, dtype: dtype);
        using var w = Random([outFeatures, inFeatures], 2, 0.02f, dtype);
        using var b = bias ? Random([outFeatures], 3, 0.02f, dtype) : null;
        var (ms, reps) = Time(() => LinearOp.Forward(x, w, b).Dispose());
        double flops = 2.0 * N * inFeatures * outFeatures;
        var outcome = Rate($"[{N}, {inFeatures}] x [{outFeatures}, {inFeatures}]^T", ms, reps, flops / 1e12, "TFLOP/s");
        return dtype == Dt ? outcome : outcome with { DType = "f32 (fp32 acc)" };
    }

    private BenchOutcome LinearBackward(int inFeatures, int outFeatures)
    {
        using var x = Random([N, inFeatures], 1);
        using var w = Random([outFeatures, inFeatures], 2, 0.02f);
        using var dy = Random([N, outFeatures], 3);
        using var dx = _backend.Empty([N, inFeatures], Dt);
        using var dw = _backend.Zeros([outFeatures, inFeatures], DType.F32);
        var (ms, reps) = Time(() => LinearOp.Backward(dy, x, w, dx, dw, null));
        double flops = 4.0 * N * inFeatures * outFeatures;
        return Rate($"[{N}, {inFeatures}] -> {outFeatures}; dW fp32", ms, reps, flops / 1e12, "TFLOP/s");
    }

    /// <summary>Causal forward flops: q.k^T and p.v over half of T x T: 2 products x 2 flops x B H (T^2 / 2) D.</summary>
    private double AttentionFlops => 2.0 * Heads * (double)N * N * HeadDim;

    private string AttentionShape => $"B 1, T {N}, H {Heads}, D {HeadDim}";

    private BenchOutcome AttentionForward()
    {
        using var q = Random([1, N, Heads, HeadDim], 1);
        using var k = Random([1, N, Heads, HeadDim], 2);
        using var v = Random([1, N, Heads, HeadDim], 3);
        var (ms, reps) = Time(() =>
        {
            AttentionOp.Forward(q, k, v, out var lse).Dispose();
            lse.Dispose();
        });
        return Rate(AttentionShape, ms, reps, AttentionFlops / 1e12, "TFLOP/s", "flops: the causal half");
    }

    private BenchOutcome AttentionBackward()
    {
        using var q = Random([1, N, Heads, HeadDim], 1);
        using var k = Random([1, N, Heads, HeadDim], 2);
        using var v = Random([1, N, Heads, HeadDim], 3);
        using var dy = Random([1, N, Heads, HeadDim], 4);
        using var o = AttentionOp.Forward(q, k, v, out var lse);
        using var _ = lse;
        using var dq = _backend.Empty(q.Shape, Dt);
        using var dk = _backend.Empty(q.Shape, Dt);
        using var dv = _backend.Empty(q.Shape, Dt);
        var (ms, reps) = Time(() => AttentionOp.Backward(dy, q, k, v, o, lse, dq, dk, dv));
        // Recomputed q.k^T, then dV, dP, dQ, dK: 5 products to the forward's 2 (the useful flops: the deterministic kernels
        // recompute q.k^T and dP in their dq blocks, 7 products in all). At a 16-bit dtype and D a multiple of 16 this
        // times kernels/attention_mma_backward.cu (tensor cores), otherwise attention.cu's SIMT backward.
        string kernel = AttentionKernels.BackwardUsesTensorCores(Dt, HeadDim, default, default, default, default)
            ? AttentionKernels.TensorCoreBackwardKernel(Dt, HeadDim) : "attention_backward (SIMT)";
        return Rate(AttentionShape, ms, reps, 2.5 * AttentionFlops / 1e12, "TFLOP/s", $"flops: 2.5 x the forward's causal half; {kernel}");
    }

    /// <summary>
    /// One decoded token's attention at batch 1 (bf16 at D 80: the split-K decode and its combine) over a cache of
    /// <see cref="BenchSizes.Prefill"/> keys (2,000 on Phi-2) in a cache of N rows; its K and V read bandwidth beside a
    /// device-to-device copy of the same bytes timed in the same run (decode is bound by reading K and V: issue 13 aims at
    /// 70 % of the copy's).
    /// </summary>
    private BenchOutcome CachedAttentionDecode()
    {
        int keyTime = _sizes.Prefill, capacity = N;
        using var q = Random([1, 1, Heads, HeadDim], 1);
        using var keys = Random([1, capacity, Heads, HeadDim], 2);
        using var values = Random([1, capacity, Heads, HeadDim], 3);
        using var keyTimes = _backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new[] { keyTime }.AsSpan()), DType.I32, [1], DType.I32);
        var (ms, reps) = Time(() => AttentionOp.Cached(q, keys, values, keyTimes).Dispose());
        double bytes = 2.0 * keyTime * Heads * HeadDim * 2;
        // The copy reads what the decode reads (the key rows of K and V) and writes as much again: its read rate is half
        // the bytes it moves a second.
        using var source = Random([2 * keyTime * Heads * HeadDim], 4);
        using var destination = _backend.Empty(source.Shape, Dt);
        var (copyMs, _) = Time(() => _backend.Copy(source, destination));
        double readRate = ms > 0 ? bytes / 1e9 / (ms / 1000) : double.PositiveInfinity, copyRate = copyMs > 0 ? bytes / 1e9 / (copyMs / 1000) : double.PositiveInfinity;
        return Rate($"B 1, Tq 1, key time {keyTime} of Tmax {capacity}, H {Heads}, D {HeadDim}", ms, reps, bytes / 1e9, "GB/s",
            $"bytes: the K and V rows read; a device-to-device copy of them reads {copyRate:F0} GB/s in this run: {100 * readRate / copyRate:F0} % of it");
    }

    private BenchOutcome LayerNormForward()
    {
        using var x = Random([N, C], 1);
        using var w = Random([C], 2);
        using var b = Random([C], 3);
        var (ms, reps) = Time(() =>
        {
            LayerNormOp.Forward(x, w, b, 1e-5, out var mean, out var rstd).Dispose();
            mean.Dispose();
            rstd.Dispose();
        });
        return Rate($"[{N}, {C}]", ms, reps, 2.0 * N * C * 2 / 1e9, "GB/s", null);
    }

    private BenchOutcome LayerNormBackward()
    {
        using var x = Random([N, C], 1);
        using var w = Random([C], 2);
        using var b = Random([C], 3);
        using var dy = Random([N, C], 4);
        using var y = LayerNormOp.Forward(x, w, b, 1e-5, out var mean, out var rstd);
        using var m = mean;
        using var r = rstd;
        using var dx = _backend.Empty([N, C], Dt);
        using var dw = _backend.Zeros([C], DType.F32);
        using var db = _backend.Zeros([C], DType.F32);
        var (ms, reps) = Time(() => LayerNormOp.Backward(dy, x, w, mean, rstd, dx, dw, db));
        return Rate($"[{N}, {C}]; dW, dB fp32", ms, reps, 3.0 * N * C * 2 / 1e9, "GB/s", null);
    }

    private BenchOutcome Gelu(bool backward)
    {
        using var x = Random([N, Inner], 1);
        using var dy = backward ? Random([N, Inner], 2) : null;
        using var dx = backward ? _backend.Empty([N, Inner], Dt) : null;
        var (ms, reps) = backward
            ? Time(() => GeluNewOp.Backward(dy!, x, dx!))
            : Time(() => GeluNewOp.Forward(x).Dispose());
        return Rate($"[{N}, {Inner}]", ms, reps, (backward ? 3.0 : 2.0) * N * Inner * 2 / 1e9, "GB/s", null);
    }

    /// <summary>
    /// fc1 and gelu_new as the model runs them in training (LinearGeluOp): the path is the one the probe chose on this
    /// device (the runner applies it first), named in the detail. Flops: the GEMM's (2 or 4 N C I).
    /// </summary>
    private BenchOutcome LinearGelu(bool backward)
    {
        using var x = Random([N, C], 1);
        using var w = Random([Inner, C], 2, 0.02f);
        using var b = Random([Inner], 3, 0.02f);
        string path = _backend.DeviceApi.Blas.GeluEpilogueIsGeluNew ? "GELU_AUX_BIAS epilogue" : "BIAS epilogue + gelu_new";
        double ms;
        int reps;
        if (backward)
        {
            var (y, pre) = LinearGeluOp.Forward(x, w, b, savePre: true);
            using (y)
            using (pre)
            using (var dy = Random([N, Inner], 4))
            using (var dx = _backend.Empty([N, C], Dt))
            using (var dw = _backend.Zeros([Inner, C], DType.F32))
            using (var db = _backend.Zeros([Inner], DType.F32))
                (ms, reps) = Time(() => LinearGeluOp.Backward(dy, x, w, pre!, dx, dw, db));
        }
        else
        {
            (ms, reps) = Time(() =>
            {
                var (y, pre) = LinearGeluOp.Forward(x, w, b, savePre: true);
                y.Dispose();
                pre?.Dispose();
            });
        }
        double flops = (backward ? 4.0 : 2.0) * N * C * Inner;
        return Rate($"[{N}, {C}] x [{Inner}, {C}]^T", ms, reps, flops / 1e12, "TFLOP/s", path);
    }

    /// <summary>Median ms of the training step by layer count, for <see cref="LayerStep"/>.</summary>
    private readonly Dictionary<int, double> _stepMs = [];

    private BenchOutcome TrainingStep(int layers)
    {
        var config = _sizes.Model with { NumHiddenLayers = layers };
        var build = Stopwatch.StartNew();
        using var model = RandomModel(config, seed: 7);
        model.SetRequiresGrad(true);
        model.Training = true;
        int[] ids = Ids(N, config.VocabSize, 8);
        double buildSeconds = build.Elapsed.TotalSeconds;
        var (ms, reps) = Time(() =>
        {
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(ids)), ids);
            tape.Backward(loss);
        }, warmUp: 1);
        _stepMs[layers] = ms;
        return new BenchOutcome("", $"{layers} layer{(layers == 1 ? "" : "s")} + embedding + lm_head + loss, B 1, T {N}", DtName,
            BenchStatus.Ran, ms, N / (ms / 1000), "tokens/s", reps, $"every parameter trained, dropout on; built in {Format.Seconds(buildSeconds)} s");
    }

    /// <summary>One decoder layer's forward and backward: the 2-layer step's median less the 1-layer step's.</summary>
    private BenchOutcome LayerStep()
    {
        string shape = $"B 1, T {N}: 2-layer step - 1-layer step";
        if (!_stepMs.TryGetValue(1, out double one) || !_stepMs.TryGetValue(2, out double two))
            return new BenchOutcome("", shape, DtName, BenchStatus.NotRun, 0, 0, "", 0, "not run: needs both training steps");
        double ms = two - one;
        return new BenchOutcome("", shape, DtName, BenchStatus.Ran, ms, ms > 0 ? N / (ms / 1000) : double.NaN, "tokens/s", 0,
            ms > 0 ? "a difference of two medians" : "a difference of two medians, not positive: timing noise exceeds a layer's cost");
    }

    /// <summary>
    /// A LoRA step as `phi2 bench lora` times it (the library's <see cref="Benchmark"/>: wall clock until the device
    /// has finished, fp32 adapters over the BF16 base), at the GPU peers' shape.
    /// </summary>
    private BenchOutcome LoraStep()
    {
        var options = _sizes.LoraStep with { Repeat = Math.Min(_sizes.LoraStep.Repeat, _sizes.Reps) };
        using var compute = ComputeBackend.Over(_backend, Dt, ComputeUse.Training);
        var result = Benchmark.Run(options, compute);
        _modelledMs = (_model.Gpu == GpuFigures.H200 ? result.ModelledH200Ms : result.ModelledH100Ms) ?? double.NaN;
        return new BenchOutcome("", $"{result.Layers} layers, B {result.Batch}, T {result.Sequence}, r {result.LoraRank} on q,k,v,dense,fc1,fc2", DtName,
            BenchStatus.Ran, result.Times.MedianMs, result.TokensPerSecond, "tokens/s", result.Times.Milliseconds.Count,
            $"wall clock; peak {result.PeakBytes / (double)(1L << 30):F2} GiB of tensors; built in {Format.Seconds(result.SetupSeconds)} s");
    }

    // ---- helpers ----

    /// <summary>
    /// Runs <paramref name="op"/> <paramref name="warmUp"/> times, then times up to <paramref name="maxReps"/>
    /// repetitions with device events on the backend's stream (stopping after <see cref="PerCase"/>, one at least);
    /// returns the median milliseconds and the count. One more repetition, under the profiler, gives the case its modelled
    /// milliseconds (<see cref="TakeModelledMs"/>).
    /// </summary>
    private (double Ms, int Reps) Time(Action op, int warmUp = WarmUp, int maxReps = MaxReps)
    {
        maxReps = Math.Min(maxReps, _sizes.Reps);
        var device = _backend.DeviceApi;
        var stream = _backend.Stream;
        var wall = Stopwatch.StartNew();
        for (int i = 0; i < warmUp && (i == 0 || wall.Elapsed < PerCase / 2); i++) op();
        _backend.Synchronize();
        var times = new List<double>(maxReps);
        wall.Restart();
        while (times.Count < Math.Max(1, maxReps) && (times.Count == 0 || wall.Elapsed < PerCase))
        {
            var start = device.RecordEvent(stream);
            try
            {
                op();
                var end = device.RecordEvent(stream);
                try
                {
                    times.Add(device.ElapsedMilliseconds(start, end));
                }
                finally
                {
                    device.DestroyEvent(end);
                }
            }
            finally
            {
                device.DestroyEvent(start);
            }
        }
        times.Sort();
        _modelledMs = Modelled(op);
        return (times[times.Count / 2], times.Count);
    }

    /// <summary>One more repetition of <paramref name="op"/> under the profiler, priced by the roofline model (modelled milliseconds).</summary>
    private double Modelled(Action op) => _model.Milliseconds(ProfileRecorder.Record(op));

    private static BenchOutcome Rate(string shape, double ms, int reps, double amount, string unit, string? detail = null, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") =>
        new(caller, shape, DtName, BenchStatus.Ran, ms, ms > 0 ? amount / (ms / 1000) : double.PositiveInfinity, unit, reps, detail ?? "");

    /// <summary>A BF16 tensor of uniform values in [-scale, scale), from a tiled random pattern (fast at any size).</summary>
    private Tensor Random(int[] shape, int seed, float scale = 1f, DType dtype = Dt)
    {
        var values = Pattern(Tensor.CountElements(shape), seed, scale);
        return _backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.BF16, shape, dtype);
    }

    /// <summary>
    /// A Phi-2 model with random BF16 weights built on the device quickly: each matrix tiles a 64 Ki-element random
    /// pattern (normal-ish, 0.02 scale) from a random offset, biases are zero and LayerNorms unit. Phi2Model.CreateRandom
    /// draws every weight with a Gaussian in fp32 on the host, which for 2.7 B parameters would take minutes.
    /// </summary>
    private Phi2Model RandomModel(Phi2Config config, int seed)
    {
        var random = new System.Random(seed);
        return new Phi2Model(config, _backend, (name, shape) =>
        {
            long count = Tensor.CountElements(shape);
            if (!name.EndsWith(".weight", StringComparison.Ordinal)) return _backend.Zeros(shape, Dt);
            ushort[] values;
            if (name.Contains("layernorm", StringComparison.Ordinal))
            {
                values = new ushort[count];
                values.AsSpan().Fill(Bf16(1f));
            }
            else values = Pattern(count, random.Next(), 0.035f); // uniform [-a, a) with a = 0.02 sqrt(3): sd 0.02
            return _backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.BF16, shape, Dt);
        });
    }

    private static readonly ushort[] s_pattern = MakePattern();

    private static ushort[] MakePattern()
    {
        var random = new System.Random(12345);
        var pattern = new ushort[1 << 16];
        for (int i = 0; i < pattern.Length; i++) pattern[i] = Bf16((float)(random.NextDouble() * 2 - 1));
        return pattern;
    }

    private static ushort[] Pattern(long count, int seed, float scale)
    {
        var values = new ushort[count];
        var scaled = new ushort[s_pattern.Length];
        for (int i = 0; i < scaled.Length; i++) scaled[i] = Bf16(FromBf16(s_pattern[i]) * scale);
        int offset = new System.Random(seed).Next(scaled.Length);
        var span = values.AsSpan();
        var source = scaled.AsSpan(offset);
        while (span.Length > 0)
        {
            int n = Math.Min(span.Length, source.Length);
            source[..n].CopyTo(span);
            span = span[n..];
            source = scaled;
        }
        return values;
    }

    private static ushort Bf16(float value) => (ushort)(BitConverter.SingleToUInt32Bits(value) >> 16);

    private static float FromBf16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    private static int[] Ids(int count, int vocab, int seed)
    {
        var random = new System.Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => random.Next(vocab))];
    }
}
