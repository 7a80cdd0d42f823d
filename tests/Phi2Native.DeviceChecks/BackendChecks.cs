using System.Runtime.InteropServices;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// The CUDA backend (<see cref="CudaBackend"/>) over the device, against the CPU backend on the same inputs: what the
/// kernel checks do not cover - Linear's row-major/column-major mapping onto cuBLAS and cuBLASLt (BIAS epilogue, the
/// bias gradient as a GEMM against ones, beta = 1 accumulation), uploads converted on the device, a chain of ops
/// through the gradient tape queued on the backend's own (non-default) stream, and a whole Phi-2 (the Tiny config,
/// seeded random weights): a training-mode step and batched KV-cache decoding, on the GPU the end-to-end proof.
/// </summary>
public static class BackendChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        new("CudaBackend.FromBytes f16/bf16/f32 -> bf16, Cast, Copy", ["cast_f16_bf16", "cast_f32_bf16", "cast_bf16_f32"], Conversions),
        Linear(DType.F32, 37, 45, 23),
        Linear(DType.BF16, 37, 45, 23),
        Linear(DType.F32, 1, 80, 7),
        new("CudaBackend tape: embedding -> layernorm -> linear -> gelu_new -> cross-entropy, f32",
            ["embedding_f32", "layernorm_f32", "cublasLtMatmul", "cublasGemmEx", "gelu_new_f32", "cross_entropy_f32", "embedding_backward_f32",
             "layernorm_backward_f32", "gelu_new_backward_f32", "cross_entropy_backward_f32", "add_f32"], Chain),
        new("CudaBackend Phi-2 (Tiny config): training-mode step (dropout) and batched KV-cache decoding, f32",
            ["attention_f32", "attention_backward_f32", "cached_attention_f32", "rotary_f32", "dropout_f32", "cache_write_f32", "cublasLtMatmul"], TinyModel),
    ];

    private static DeviceCheck Linear(DType dtype, int rows, int inFeatures, int outFeatures) =>
        new($"CudaBackend.Linear(+Backward) {KernelName.Suffix(dtype)} x [{rows}, {inFeatures}] W [{outFeatures}, {inFeatures}]",
            ["cublasLtMatmul", "cublasGemmEx"], device => RunLinear(device, dtype, rows, inFeatures, outFeatures));

    private static CheckResult Conversions(IDeviceApi device)
    {
        using var backend = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        float[] values = [.. TestData.Uniform(300, seed: 4100, scale: 70f), 0f, -0f, 65504f, float.NegativeInfinity, float.NaN];
        var results = new List<CheckResult>();
        foreach (var source in new[] { DType.F16, DType.BF16, DType.F32 })
        {
            byte[] bytes = DeviceBuffer.Encode(source, values);
            var expected = cpu.Backend.FromBytes(bytes, source, [values.Length], DType.BF16);
            var actual = backend.FromBytes(bytes, source, [values.Length], DType.BF16);
            results.Add(CheckResult.CompareBits($"{source} -> BF16", actual.ToSingleArray(), expected.ToSingleArray()));
            var wide = backend.Cast(actual, DType.F32);
            var copy = backend.Empty([values.Length], DType.F32);
            backend.Copy(wide, copy);
            results.Add(CheckResult.CompareBits($"{source} -> BF16 -> F32 copy", copy.ToSingleArray(), expected.ToSingleArray()));
        }
        return CheckResult.Combine([.. results]);
    }

    private static CheckResult RunLinear(IDeviceApi device, DType dtype, int rows, int inFeatures, int outFeatures)
    {
        using var backend = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        int seed = 4200 + rows + inFeatures + outFeatures;
        float[] x = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * inFeatures, seed));
        float[] w = CpuReference.RoundTrip(dtype, TestData.Uniform(outFeatures * inFeatures, seed + 1));
        float[] b = CpuReference.RoundTrip(dtype, TestData.Uniform(outFeatures, seed + 2));
        float[] dy = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * outFeatures, seed + 3));
        float[] dw0 = TestData.Uniform(outFeatures * inFeatures, seed + 4);
        float[] db0 = TestData.Uniform(outFeatures, seed + 5);

        var (cx, cw, cb, cdy) = (cpu.F32(x, rows, inFeatures), cpu.F32(w, outFeatures, inFeatures), cpu.F32(b, outFeatures), cpu.F32(dy, rows, outFeatures));
        var (cdw, cdb, cdx) = (cpu.F32(dw0, outFeatures, inFeatures), cpu.F32(db0, outFeatures), cpu.Backend.Empty([rows, inFeatures], DType.F32));
        var cy = LinearOp.Forward(cx, cw, cb);
        LinearOp.Backward(cdy, cx, cw, cdx, cdw, cdb);

        var gx = Upload(backend, x, dtype, rows, inFeatures);
        var gw = Upload(backend, w, dtype, outFeatures, inFeatures);
        var gb = Upload(backend, b, dtype, outFeatures);
        var gdy = Upload(backend, dy, dtype, rows, outFeatures);
        var gdw = Upload(backend, dw0, DType.F32, outFeatures, inFeatures);   // fp32 parameter gradients, also beside bf16 layers
        var gdb = Upload(backend, db0, DType.F32, outFeatures);
        var gdx = backend.Empty([rows, inFeatures], dtype);
        var gy = LinearOp.Forward(gx, gw, gb);
        LinearOp.Backward(gdy, gx, gw, gdx, gdw, gdb);

        return CheckResult.Combine(
            Tolerances.Forward(dtype).Compare("y", gy.ToSingleArray(), cpu.CastTo(dtype, cy)),
            Tolerances.Gradient(dtype).Compare("dx", gdx.ToSingleArray(), cpu.CastTo(dtype, cdx)),
            Tolerances.Gradient(DType.F32).Compare("dW (+=)", gdw.ToSingleArray(), cdw.ToSingleArray()),
            Tolerances.Gradient(DType.F32).Compare("dBias (+=)", gdb.ToSingleArray(), cdb.ToSingleArray()));
    }

    private static CheckResult Chain(IDeviceApi device)
    {
        using var backend = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        var cpuSide = RunChain(cpu.Backend);
        var deviceSide = RunChain(backend);
        var results = new List<CheckResult>();
        foreach (var (name, expected) in cpuSide)
            results.Add(Tolerances.Gradient(DType.F32).Compare(name, deviceSide[name], expected));
        return CheckResult.Combine([.. results]);
    }

    // loss = CE(gelu_new(Linear(LayerNorm(Embedding(ids))))) over V = 29, C = 40; every parameter's gradient.
    private static Dictionary<string, float[]> RunChain(IBackend backend)
    {
        const int vocab = 29, channels = 40;
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        var table = Upload(backend, TestData.Uniform(vocab * channels, 4300), DType.F32, vocab, channels);
        var gamma = Upload(backend, [.. TestData.Uniform(channels, 4301).Select(v => 1 + v / 4)], DType.F32, channels);
        var beta = Upload(backend, TestData.Uniform(channels, 4302), DType.F32, channels);
        var weight = Upload(backend, TestData.Uniform(vocab * channels, 4303, 0.3f), DType.F32, vocab, channels);
        var bias = Upload(backend, TestData.Uniform(vocab, 4304), DType.F32, vocab);
        var parameters = new[] { ("table", table), ("gamma", gamma), ("beta", beta), ("weight", weight), ("bias", bias) };
        foreach (var (_, parameter) in parameters) parameter.RequiresGrad = true;
        int[] ids = [3, 28, 0, 7, 7, 15, 22, 1, 9];
        int[] targets = [28, 0, -100, 7, 15, 22, 1, 9, -100];
        var hidden = EmbeddingOp.Apply(table, Ids(backend, ids));
        var logits = GeluNewOp.Apply(LinearOp.Apply(LayerNormOp.Apply(hidden, gamma, beta, 1e-5), weight, bias));
        var loss = CrossEntropyOp.Apply(logits, Ids(backend, targets));
        tape.Backward(loss);
        var result = new Dictionary<string, float[]> { ["loss"] = loss.ToSingleArray(), ["logits"] = logits.ToSingleArray() };
        foreach (var (name, parameter) in parameters) result["d" + name] = parameter.Grad!.ToSingleArray();
        return result;
    }

    private static CheckResult TinyModel(IDeviceApi device)
    {
        using var backend = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        var expected = RunModel(cpu.Backend);
        var actual = RunModel(backend);
        return CheckResult.Combine([.. expected.Select(e => Tolerances.Model.Compare(e.Key, actual[e.Key], e.Value))]);
    }

    // Random Tiny weights (seeded), one training-mode forward and backward (resid_pdrop 0.1: the masks are seeded too),
    // then batched generation: rows of 6 and 3 tokens prefilled, then two decode steps through the per-row ops.
    private static Dictionary<string, float[]> RunModel(IBackend backend)
    {
        var result = new Dictionary<string, float[]>();
        using var model = Phi2Model.CreateRandom(Phi2Config.Tiny, backend, seed: 4400);
        int[] ids = [5, 17, 300, 3, 99, 0, 150, 42, 511, 7, 260, 11, 64, 2, 9, 480, 33, 1];
        using (var scope = TensorScope.Begin())
        using (var tape = GradientTape.Begin())
        {
            model.SetRequiresGrad(true);
            model.Training = true;
            var logits = model.Forward(model.CreateInputIds(ids, 2));
            var loss = model.CausalLanguageModelLoss(logits, ids);
            tape.Backward(loss);
            result["logits"] = logits.ToSingleArray();
            result["loss"] = loss.ToSingleArray();
            foreach (var parameter in model.Parameters()) result["d" + parameter.Name] = parameter.Grad!.ToSingleArray();
        }
        model.SetRequiresGrad(false);
        model.Training = false;
        using (var scope = TensorScope.Begin())
        using (var cache = new KeyValueCache(model, 2, 12))
        {
            result["prefill"] = model.Forward(model.CreateInputIds([.. ids[..6], .. ids[6..9], 1, 1, 1], 2), cache, [5, 2]).ToSingleArray();
            cache.Truncate(1, 3);
            result["decode 0"] = model.ForwardLast(model.CreateInputIds([ids[9], ids[10]], 2), cache).ToSingleArray();
            result["decode 1"] = model.ForwardLast(model.CreateInputIds([ids[11], ids[12]], 2), cache).ToSingleArray();
        }
        return result;
    }

    private static Tensor Upload(IBackend backend, float[] values, DType dtype, params int[] shape) =>
        backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype);

    private static Tensor Ids(IBackend backend, int[] ids) =>
        backend.FromBytes(MemoryMarshal.AsBytes(ids.AsSpan()), DType.I32, [ids.Length], DType.I32);
}
