using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Hosting;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Profiling;

/// <summary>
/// What a profile counts, against figures derived by hand from the model's structure: launches per layer per decoded
/// token, host syncs and their call sites, a LoRA Linear's device calls, allocations; on the emulated device and the CPU.
/// </summary>
[TestFixture]
public class ProfileCountTests
{
    // dGeluEpilogue false: the emulated device's DGELU switch off, as on a GPU whose probe it failed.
    private static ProfileReport Profile(ProfileWorkload what, string device = "emulated", int layers = 4, int batch = 1, int seq = 8,
        DType dtype = DType.F32, bool dGeluEpilogue = true)
    {
        var options = new ProfileOptions
        {
            Device = DeviceChoice.Parse(device), What = what, Layers = layers, Batch = batch, Sequence = seq, DType = dtype,
        };
        if (dGeluEpilogue) return ProfileRun.Run(options);
        using var compute = ComputeBackend.Open(options.Device, options.DType, ProfileRun.Use(options));
        ((CudaBackend)compute.Backend).DeviceApi.Blas.DGeluEpilogueIsGeluNew = false;
        return ProfileRun.Run(options, compute);
    }

    private static int Launches(ProfileReport report, Func<ProfileEvent, bool> where) =>
        report.Events.Count(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas && where(e));

    [Test, Category("Emulated")]
    public void ADecodedTokenLaunches7KernelsPerLayerPlus3()
    {
        // Per layer (Phi2DecoderLayer with a KV cache, fp32): input_layernorm 1; q_proj, k_proj and v_proj as one GEMM over
        // the layer's [3C, C] weight with the bias in its epilogue, then qkv_split_rotary (split into heads, rotary of q and
        // k, k and v straight into the cache's rows) (QkvProjectionOp: 2); cached_attention 1; dense, fc1, fc2 one GEMM
        // each (3): fc1's with its bias and gelu_new in the epilogue (LinearGeluOp; the emulated device's GELU epilogue is
        // gelu_new, so no gelu_new launch), dense's and fc2's adding the residual as they go (beta 1: dense writes
        // h + attention, fc2 adds the MLP into it), so no parallel_residual launch: 7.
        // (8 with parallel_residual; 13 before QkvProjectionOp: 3 GEMMs for q, k, v, rotary of q and of k, cache_write of
        // k and of v, i.e. 7 where there are 2 now; 14 before LinearGelu: gelu_new was its own launch.)
        // Per token: embed_tokens 1; final_layernorm 1; lm_head 1: 3 (4 before the decode graph: the gather of the last
        // position's row, an embedding lookup of host-made indices, which a one-token step does not need).
        const int perLayer = 1 + 2 + 1 + 3, perToken = 3;
        foreach (int layers in new[] { 2, 4 })
        {
            var report = Profile(ProfileWorkload.Decode, layers: layers);
            Assert.That(report.Launches, Is.EqualTo(perLayer * layers + perToken), $"{layers} layers: " + Names(report));
            Assert.That(Launches(report, e => e.Module is { } m && (m == "model.layers.1" || m.StartsWith("model.layers.1.", StringComparison.Ordinal))),
                Is.EqualTo(perLayer),
                "launches attributed to layer 1's modules");
            Assert.That(report.HostSyncs, Is.Zero, "a decoded token reads nothing back until its logits are used");
            Assert.That(report.Allocations, Is.Zero, "after the warm-up every block comes from the caching allocator");
            Assert.That(report.Events.Where(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas).All(e => e.Phase == ProfilePhase.Forward));
        }
    }

    [Test, Category("Emulated")]
    public void ADecodedTokenInBf16Launches7KernelsPerLayerPlus3()
    {
        // As in fp32 (above; fc1's bias and gelu_new in its GEMM's epilogue, GELU_BIAS at inference, so no gelu_new
        // launch; the residual in dense's and fc2's GEMMs), but attention through the cache at head dim 80 in bf16 is the
        // split-K decode (AttentionKernels.Choose: Tq = 1 <= 4): attention_decode, whose last chunk of each (batch row,
        // head) combines the chunks' partials, 1 launch as cached_attention was. input_layernorm 1 + q/k/v GEMM and
        // qkv_split_rotary 2 + decode 1 + dense, fc1, fc2 GEMMs 3: 7 a layer (8 with attention_decode_combine as a launch
        // of its own, 9 with parallel_residual, 14 before QkvProjectionOp, 15 before LinearGelu). The 3 a token are the same.
        const int perLayer = 1 + 2 + 1 + 3, perToken = 3;
        var report = Profile(ProfileWorkload.Decode, layers: 2, dtype: DType.BF16);
        Assert.That(report.Launches, Is.EqualTo(perLayer * 2 + perToken), Names(report));
        Assert.That(Launches(report, e => e.Name == "attention_decode_bf16_d80"), Is.EqualTo(2), Names(report));
        Assert.That(Launches(report, e => e.Name.StartsWith("attention_decode_combine", StringComparison.Ordinal)), Is.Zero, Names(report));
        Assert.That(Launches(report, e => e.Name == "qkv_split_rotary_bf16"), Is.EqualTo(2), Names(report));
        Assert.That(Launches(report, e => e.Name.StartsWith("rotary", StringComparison.Ordinal) || e.Name.StartsWith("cache_write", StringComparison.Ordinal)
            || e.Name.StartsWith("parallel_residual", StringComparison.Ordinal)), Is.Zero, Names(report));
        Assert.That(report.HostSyncs, Is.Zero);
        Assert.That(report.Allocations, Is.Zero, "the decode's partials come from the caching allocator too, its counters are the backend's");
    }

    [TestCase(DType.F32), TestCase(DType.BF16), Category("Emulated")]
    public void ADecodedTokenFromTheCapturedGraphIsOneLaunch_OneHostRead_NoAllocation(DType dtype)
    {
        // The step captured as a CUDA graph (Text.DecodeGraph), as generation replays it after its first decode step: the
        // whole token is one cuGraphLaunch; its kernels (the eager token's 7 a layer plus 3, and decode_next, the
        // device's argmax that also advances the cache's positions) run inside it. The host reads the chosen ids once, and
        // the graph's memory is its own pool: no allocation at all.
        var eager = Profile(ProfileWorkload.Decode, layers: 2, dtype: dtype);
        var report = ProfileRun.Run(new ProfileOptions
        {
            Device = DeviceChoice.Parse("emulated"), What = ProfileWorkload.Decode, Layers = 2, Batch = 1, Sequence = 8, DType = dtype, CudaGraphs = true,
        });
        Assert.That(report.Launches, Is.EqualTo(1), Names(report));
        Assert.That(report.Events.Where(e => e.Kind == ProfileEventKind.Graph).Select(e => e.Name), Is.EqualTo(new[] { "cuGraphLaunch" }));
        Assert.That(report.Events.Count(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas && e.InGraph), Is.EqualTo(eager.Launches + 1),
            "the eager token's launches and decode_next, inside the graph");
        Assert.That(report.Events.Where(e => e.InGraph).Select(e => e.Name), Does.Contain("decode_next_" + (dtype == DType.F32 ? "f32" : "bf16")));
        var syncs = report.Events.Where(e => e.Kind == ProfileEventKind.HostSync).ToList();
        Assert.That(syncs, Has.Count.EqualTo(1), "one host read a token: the chosen ids");
        Assert.That(syncs[0].Name, Is.EqualTo("CopyToHost"));
        Assert.That(report.Allocations, Is.Zero, "steady state allocates nothing");
        Assert.That(report.Events.Where(e => e.Kind is ProfileEventKind.CopyToDevice), Is.Empty, "the ids and positions are already on the device");
    }

    [Test, Category("Emulated")]
    public void ADecodedBf16TokenLaunchesNoGeluNewEither()
    {
        // bf16 decode (fp32 parameters cast once at load; the layer's launches as in fp32): fc1 and gelu_new are one
        // cublasLtMatmul (GELU_BIAS: nothing saved at inference), and no gelu_new launch is left in the token.
        var report = Profile(ProfileWorkload.Decode, layers: 2, dtype: DType.BF16);
        var fc1 = report.Events.Where(e => e.Module == "model.layers.1.mlp.fc1" && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas).ToList();
        Assert.That(fc1.Select(e => e.Name), Is.EqualTo(new[] { "cublasLtMatmul" }));
        Assert.That(fc1[0].Detail, Does.Contain("GeluBias"));
        Assert.That(report.Events.Where(e => e.Name.StartsWith("gelu_new", StringComparison.Ordinal)), Is.Empty, Names(report));
    }

    [Test, Category("Emulated")]
    public void Fc1AndGeluAreOneLaunchForward_AndThreeBackward()
    {
        // A full training step (fp32, no adapter on fc1): forward, fc1 and gelu_new are one cublasLtMatmul (GELU_AUX_BIAS,
        // the pre-activation saved as its aux). Backward: fc2's dx product (cublasLtMatmul, DGELU epilogue over that aux)
        // already gives dh = dY gelu_new'(pre) (GeluGradientFusion), so fc1 runs dx, dW and its bias's ones-vector GEMM
        // (three GemmEx) and no gelu pass; without the DGELU epilogue, bias_gelu_new_backward (dh and the bias gradient
        // in one pass), dx and dW: 3 either way, where Linear + GeluNew took gelu_new_backward, dx, dW and the bias's GEMM.
        // No gelu_new launch anywhere in the step.
        foreach (bool dGelu in new[] { true, false })
        {
            var report = Profile(ProfileWorkload.Train, layers: 2, dGeluEpilogue: dGelu);
            const string module = "model.layers.1.mlp.fc1";
            List<string> Names(string of, ProfilePhase phase) => [.. report.Events
                .Where(e => e.Module == of && e.Phase == phase && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas).Select(e => e.Name)];
            Assert.That(Names(module, ProfilePhase.Forward), Is.EqualTo(new[] { "cublasLtMatmul" }));
            Assert.That(Names(module, ProfilePhase.Backward), Is.EquivalentTo(dGelu
                ? new[] { "cublasGemmEx", "cublasGemmEx", "cublasGemmEx" }
                : new[] { "bias_gelu_new_backward_f32", "cublasGemmEx", "cublasGemmEx" }));
            var fc2Dx = report.Events.Where(e => e.Module == "model.layers.1.mlp.fc2" && e.Phase == ProfilePhase.Backward && e.Name == "cublasLtMatmul").ToList();
            Assert.That(fc2Dx.Select(e => e.Detail), dGelu ? Has.Exactly(1).Contain("DGelu") : Is.Empty, "fc2's dx product, with gelu_new's backward in it");
            Assert.That(report.Events.Where(e => e.Name.StartsWith("gelu_new", StringComparison.Ordinal)), Is.Empty);
            Assert.That(report.Events.Where(e => e.Module == module && e.Name == "cublasLtMatmul").Select(e => e.Detail), Has.All.Contain("GeluAuxBias"));
        }
    }

    [Test, Category("Emulated")]
    public void QkvIsOneGemmAndOneKernelForward_AndOneKernelAndThreeGemmsBackward()
    {
        // A full training step (fp32, every parameter trains, no adapter on q/k/v): forward, q_proj, k_proj and v_proj are
        // one cublasLtMatmul over the layer's [3C, C] weight (bias in the epilogue) and qkv_split_rotary; backward,
        // qkv_split_rotary_backward (dq, dk rotated back and dv into one [N, 3C] gradient), then dx, dW and dBias (three
        // GemmEx: the three weight gradients are views of one [3C, C] buffer, so one product covers them, and the biases'
        // likewise). The three-Linear path took 3 + 2 rotary forward and 2 rotary_backward + 3 x 3 GemmEx backward.
        var report = Profile(ProfileWorkload.Train, layers: 2);
        const string module = "model.layers.1.self_attn";
        List<string> Launched(ProfilePhase phase) => [.. report.Events
            .Where(e => e.Module == module && e.Phase == phase && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas)
            .Select(e => e.Name).Where(n => n.StartsWith("cublas", StringComparison.Ordinal) || n.StartsWith("qkv", StringComparison.Ordinal))];
        Assert.That(Launched(ProfilePhase.Forward), Is.EqualTo(new[] { "cublasLtMatmul", "qkv_split_rotary_f32" }));
        Assert.That(Launched(ProfilePhase.Backward), Is.EqualTo(new[] { "qkv_split_rotary_backward_f32", "cublasGemmEx", "cublasGemmEx", "cublasGemmEx" }));
        Assert.That(report.Events.Where(e => e.Name.StartsWith("rotary", StringComparison.Ordinal)), Is.Empty, Names(report));
    }

    [Test, Category("Emulated")]
    public void ALoraStepSyncsOnce_ToReadTheStepStatus()
    {
        // The Trainer's step queues forward, backward, the gradient check (losses, norm, clip scale) and the update, and
        // the host waits once: to read the step's status block. No wait in forward or backward (the embedding's ids and
        // the loss stay on the device).
        var report = Profile(ProfileWorkload.Lora, layers: 2);
        var syncs = report.Events.Where(e => e.Kind == ProfileEventKind.HostSync).ToList();
        Assert.That(syncs, Has.Count.EqualTo(1), string.Join("\n", syncs.Select(s => s.Detail)));
        Assert.That(syncs[0].Phase, Is.EqualTo(ProfilePhase.Optimizer));
        Assert.That(syncs[0].Name, Is.EqualTo("CopyToHost"));
        Assert.That(syncs[0].Detail, Is.EqualTo("CudaBackend.CopyToHost <- ProfileRun.Step"), "the call site: who read, for whom");
    }

    [Test, Category("Emulated")]
    public void ALoraLinearsForwardIs3LaunchesAndItsBranchBackward4_WithNoAddForItsDx()
    {
        // Forward of a LoRA Linear (kernels/lora.cu): the base's GEMM with its bias in the epilogue (cublasLtMatmul), then
        // u = dropout(x) A^T (lora_down) and y = base + scaling u B^T (lora_up): 3, where the unfused ops took 5 (2 GemmEx,
        // scale, add; in bf16 also 3 casts).
        // Backward: dB += scaling dY^T u (lora_weight_grad), du = scaling dY B (lora_up_backward), dA += du^T dropout(x)
        // (lora_weight_grad), dx = du A through the mask (lora_down_backward): the branch is 4 (it was 5: scale, 4 GemmEx);
        // the base's dx 1 (GemmEx; the frozen weight gets no dW), with beta 1 into the gradient the branch wrote
        // (BackwardContext.PendingGradient): no add or accumulate launch and no [N, in] temporary (there was one each).
        // dense's (q_proj's, k_proj's and v_proj's branches go through the fused projection: LoraOnQKAndVIs4LaunchesForward...).
        var report = Profile(ProfileWorkload.Lora, layers: 2);
        const string module = "model.layers.1.self_attn.dense";
        var forward = report.Events.Where(e => e.Module == module && e.Phase == ProfilePhase.Forward && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas)
            .Select(e => e.Name).ToList();
        Assert.That(forward, Is.EquivalentTo(new[] { "cublasLtMatmul", "lora_down_f32", "lora_up_f32" }), string.Join(", ", forward));
        Assert.That(forward, Has.Count.LessThanOrEqualTo(3), "the issue's target: base GEMM, lora down, lora up");
        var backward = report.Events.Where(e => e.Module == module && e.Phase == ProfilePhase.Backward && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas)
            .Select(e => e.Name).ToList();
        Assert.That(backward, Is.EqualTo(new[] { "lora_weight_grad_f32", "lora_up_backward_f32", "lora_weight_grad_f32", "lora_down_backward_f32", "cublasGemmEx" }),
            string.Join(", ", backward));
        var baseDx = report.Events.Single(e => e.Module == module && e.Phase == ProfilePhase.Backward && e.Name == "cublasGemmEx");
        Assert.That(baseDx.Detail, Does.Contain("+C"), "the base's dx product reads the branch's dx (beta 1): " + baseDx.Detail);
    }

    [Test, Category("Emulated")]
    public void ALoraStepsBackwardAddsNoGradientsOfItsLinears()
    {
        // Every input gradient of a Linear (with or without LoRA) or of a LoRA branch goes into its input's gradient in
        // place where one is pending (beta 1 for cuBLAS, lora_down_backward's accumulate). Before, each was a fresh
        // [N, in] buffer then an add: layer 1's q, k, v and fc1 read one LayerNorm output, each a base and a branch (8
        // deliveries, 7 adds), dense and fc2 a base and a branch each (2); layer 0's q, k, v and fc1 read the frozen
        // embedding's LayerNorm (no dx), its dense and fc2 2: 11 adds and 11 temporaries. The last add was layer 1's
        // input_layernorm's dx meeting the parallel residual's gradient of the layer's input: layernorm_backward now adds
        // its dx into that pending gradient (accumulate), so a LoRA step's backward launches no add at all.
        var report = Profile(ProfileWorkload.Lora, layers: 2);
        var adds = report.Events.Where(e => e.Phase == ProfilePhase.Backward && e.Name is "add_f32" or "accumulate_f32").ToList();
        Assert.That(adds, Is.Empty, string.Join(", ", adds.Select(e => $"{e.Name} in {e.Module}")));
        // The whole backward (the embedded model: no residual dropout, so parallel_residual's backward is views, no launch):
        // lm_head's scale_by and final_layernorm 2; layer 1: fc2 5 (the branch's 4, the base's dx product, whose DGELU
        // epilogue also gives fc1's pre-activation gradient), fc1 5 (the branch's 4, GEMM; no bias_gelu_new_backward),
        // dense 5, attention 2 (delta, backward), q/k/v 6 (qkv_split_rotary_backward, LoraQkvOp's 4, the dx GEMM),
        // input_layernorm 1 = 24; layer 0 (its input, the frozen embedding, needs no gradient): fc2 5, fc1 3 (no dx: dB,
        // du, dA), dense 5, attention 2, q/k/v 4 (no dx) = 19. 45, where the add made 46.
        var backward = report.Events.Where(e => e.Phase == ProfilePhase.Backward && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas).ToList();
        Assert.That(backward, Has.Count.EqualTo(2 + 24 + 19), string.Join(", ", backward.Select(e => $"{e.Name} in {e.Module}")));
        var forwardGelu = report.Events.Where(e => e.Name.StartsWith("gelu_new", StringComparison.Ordinal)).Select(e => e.Module).ToList();
        Assert.That(forwardGelu, Is.Empty, "fc1 with LoRA adds its branch before gelu_new inside lora_up_gelu");
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    [Category("Emulated")]
    public void ALoraStepZeroFillsNoAdapterGradient(DType dtype)
    {
        // The adapters' gradients are new each step (ZeroGrad drops them): their first lora_weight_grad /
        // lora_qkv_weight_grad writes them (accumulate off) instead of adding into a zero-filled buffer. Before, each of
        // the 6 adapted modules' dA and dB took a Fill first: 2 x 6 a layer, 24 at 2 layers (384 at Phi-2's 32).
        var report = Profile(ProfileWorkload.Lora, layers: 2, dtype: dtype);
        var fills = report.Events.Where(e => e.Kind == ProfileEventKind.CopyOnDevice && e.Name == "Fill" && e.Phase == ProfilePhase.Backward).ToList();
        Assert.That(fills, Is.Empty, string.Join(", ", fills.Select(e => $"{e.Cost.BytesWritten} bytes in {e.Module}")));
        var weightGradients = report.Events.Count(e => e.Phase == ProfilePhase.Backward
            && (e.Name.StartsWith("lora_weight_grad", StringComparison.Ordinal) || e.Name.StartsWith("lora_qkv_weight_grad", StringComparison.Ordinal)));
        // Per layer: dense, fc1 and fc2's dB and dA (6) and q, k, v's together (2); layer 0's too (x needs no gradient there,
        // the adapters do).
        Assert.That(weightGradients, Is.EqualTo(2 * 8));
    }

    [Test, Category("Emulated")]
    public void Fc1WithLoraIs3LaunchesForward_AndNoGeluNewLaunch()
    {
        // fc1 with a LoRA adapter (LoraLinearGeluOp): the base GEMM with its bias (cublasLtMatmul, BIAS epilogue), lora_down,
        // and lora_up_gelu (pre = h + scaling u B^T rounded once, y = gelu_new(pre), pre over h): 3, where the unfused path
        // took 4 (GEMM, lora_down, lora_up, gelu_new). Backward: the branch's 4 from dh and the base's dx (GemmEx, beta 1
        // into the branch's dx): 5, where it took 7 (gelu_new_backward, 4, GemmEx, add). dh itself comes from fc2's dx
        // product (its DGELU epilogue, over fc2's LoRA dx pending: GeluGradientFusion); without that epilogue fc1 starts
        // with bias_gelu_new_backward: 6.
        foreach (bool dGelu in new[] { true, false })
        {
            var report = Profile(ProfileWorkload.Lora, layers: 2, dGeluEpilogue: dGelu);
            const string module = "model.layers.1.mlp.fc1";
            List<string> Names(ProfilePhase phase) => [.. report.Events
                .Where(e => e.Module == module && e.Phase == phase && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas).Select(e => e.Name)];
            Assert.That(Names(ProfilePhase.Forward), Is.EqualTo(new[] { "cublasLtMatmul", "lora_down_f32", "lora_up_gelu_f32" }));
            string[] branch = ["lora_weight_grad_f32", "lora_up_backward_f32", "lora_weight_grad_f32", "lora_down_backward_f32", "cublasGemmEx"];
            Assert.That(Names(ProfilePhase.Backward), Is.EqualTo(dGelu ? branch : ["bias_gelu_new_backward_f32", .. branch]));
            var fc2 = report.Events.Where(e => e.Module == "model.layers.1.mlp.fc2" && e.Phase == ProfilePhase.Backward && e.Kind == ProfileEventKind.Blas).ToList();
            Assert.That(fc2.Select(e => e.Detail), dGelu ? Has.Exactly(1).Contain("DGelu").And.Exactly(1).Contain("+C") : Has.None.Contain("DGelu"),
                "fc2's base dx product adds into its branch's dx (beta 1) and takes gelu_new's backward: " + string.Join("; ", fc2.Select(e => e.Detail)));
        }
    }

    [Test, Category("Emulated")]
    public void LoraOnQKAndVIs2LaunchesForward_And4Backward_OverTheFusedProjection()
    {
        // LoraQkvOp over a fused [N, 3 C] projection (the QKV GEMM not counted: the caller's), q, k and v adapted with
        // dropout: lora_qkv_down (x read once, three masks) and lora_qkv_up (three column blocks): 2, where three LoraOps
        // take 6. Backward: dB of all three, du, dA of all three, dx (+= into x's pending gradient): 4, where three
        // LoraOps take 12 (and, before BackwardContext.PendingGradient, 2 adds of their dx). With k absent: the same 2 and 4.
        using var cuda = CudaBackend.OpenEmulated();
        using var scope = TensorScope.Begin();
        const int rows = 6, channels = 40;
        foreach (bool withK in new[] { true, false })
        {
            Tensor Values(int[] shape, DType dtype)
            {
                var values = new float[shape.Aggregate(1, (a, b) => a * b)];
                for (int i = 0; i < values.Length; i++) values[i] = MathF.Sin(i * 0.37f) * 0.5f;
                return cuda.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype);
            }
            LoraQkvModule? Module(int m) => m == 1 && !withK ? null
                : new LoraQkvModule(Values([8, channels], DType.F32), Values([channels, 8], DType.F32), new LoraBranch(2.0, 0.1, 100UL + (ulong)m));
            LoraQkvModule?[] modules = [Module(0), Module(1), Module(2)];
            var (x, qkv, dy, dx) = (Values([rows, channels], DType.BF16), Values([rows, 3 * channels], DType.BF16), Values([rows, 3 * channels], DType.BF16),
                Values([rows, channels], DType.BF16));
            Tensor?[] dA = [.. modules.Select(m => m is null ? null : Values([8, channels], DType.F32))];
            Tensor?[] dB = [.. modules.Select(m => m is null ? null : Values([channels, 8], DType.F32))];
            Tensor u = null!;
            var forward = ProfileRecorder.Record(() => LoraQkvOp.Forward(x, qkv, modules, out u));
            var backward = ProfileRecorder.Record(() => LoraQkvOp.Backward(dy, x, u, modules, dx, dA, dB, accumulateDx: true));
            List<string> Launches(IReadOnlyList<ProfileEvent> events) =>
                [.. events.Where(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas && e.Name.StartsWith("lora", StringComparison.Ordinal)).Select(e => e.Name)];
            Assert.That(Launches(forward), Is.EqualTo(new[] { "lora_qkv_down_bf16", "lora_qkv_up_bf16" }), $"k present: {withK}");
            Assert.That(Launches(backward), Is.EqualTo(new[] { "lora_qkv_weight_grad_bf16", "lora_qkv_up_backward_bf16", "lora_qkv_weight_grad_bf16", "lora_qkv_down_backward_bf16" }),
                $"k present: {withK}");
        }
    }

    [Test, Category("Emulated")]
    public void LoraOnQKAndVIs4LaunchesForward_OneGemmBeforeAndOneSplitAfterTheBranches()
    {
        // A LoRA step (ProfileWorkload.Lora: q_proj, k_proj, v_proj, dense, fc1, fc2 adapted, the base frozen), layer 1's
        // q/k/v: QkvProjectionOp with LoraQkvOp's branches, forward the GEMM over the [3C, C] weight (bias in the epilogue),
        // lora_qkv_down, lora_qkv_up and qkv_split_rotary: 4, where the three-Linear fallback took 3 x 3 (GEMM, lora_down,
        // lora_up) + 2 rotary = 11. Backward: qkv_split_rotary_backward (one [N, 3C] dqkv), LoraQkvOp's 4 (dB, du, dA, dx +=
        // into x's pending gradient), then the base's dX GEMM (beta 1; the weights are frozen: no dW, no db): 6, where the
        // fallback took 2 rotary_backward + 3 x 5.
        var report = Profile(ProfileWorkload.Lora, layers: 2);
        const string module = "model.layers.1.self_attn";
        List<string> Launched(ProfilePhase phase) => [.. report.Events
            .Where(e => e.Module == module && e.Phase == phase && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas)
            .Select(e => e.Name).Where(n => n.StartsWith("cublas", StringComparison.Ordinal) || n.StartsWith("qkv", StringComparison.Ordinal)
                || n.StartsWith("lora", StringComparison.Ordinal))];
        Assert.That(Launched(ProfilePhase.Forward), Is.EqualTo(new[] { "cublasLtMatmul", "lora_qkv_down_f32", "lora_qkv_up_f32", "qkv_split_rotary_f32" }),
            Names(report));
        Assert.That(Launched(ProfilePhase.Backward), Is.EqualTo(new[]
        {
            "qkv_split_rotary_backward_f32", "lora_qkv_weight_grad_f32", "lora_qkv_up_backward_f32", "lora_qkv_weight_grad_f32", "lora_qkv_down_backward_f32",
            "cublasGemmEx",
        }));
        Assert.That(report.Events.Where(e => e.Name.StartsWith("rotary", StringComparison.Ordinal) || e.Name.StartsWith("lora_down", StringComparison.Ordinal)
            && e.Module!.StartsWith(module + ".", StringComparison.Ordinal) && !e.Module.EndsWith(".dense", StringComparison.Ordinal)), Is.Empty, Names(report));
    }

    [Test, Category("Emulated")]
    public void ALayersForwardWithLoraOnEverySixProjectionsIs16Launches()
    {
        // Layer 1's forward in a LoRA step (fp32, training; every launch attributed to model.layers.1 or below):
        //   input_layernorm                              layernorm                                    1
        //   q_proj, k_proj, v_proj (QkvProjectionOp)     GEMM [N, 3C], lora_qkv_down, lora_qkv_up,
        //                                                qkv_split_rotary                             4
        //   attention                                    attention                                    1
        //   dense (LoraOp)                               GEMM, lora_down, lora_up                     3
        //   fc1 (LoraLinearGeluOp)                       GEMM, lora_down, lora_up_gelu                3
        //   fc2 (LoraOp)                                 GEMM, lora_down, lora_up                     3
        //   the residual (dense and fc2 carry adapters,  parallel_residual                            1
        //   so neither GEMM can add it with beta 1)
        // = 16, the target; before the fused q/k/v LoRA, q/k/v took 3 x 3 + 2 rotary = 11: 23.
        var report = Profile(ProfileWorkload.Lora, layers: 2);
        var launched = report.Events.Where(e => e.Phase == ProfilePhase.Forward && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas
            && e.Module is { } m && (m == "model.layers.1" || m.StartsWith("model.layers.1.", StringComparison.Ordinal))).Select(e => $"{e.Name} in {e.Module}").ToList();
        Assert.That(launched, Has.Count.EqualTo(16), string.Join(", ", launched));
        Assert.That(launched, Has.Count.LessThanOrEqualTo(16), "the issue's target");
    }

    [Test, Category("Emulated")]
    public void ADecodedTokenWithLoraOnQKAndVLaunches2MorePerLayer()
    {
        // Decoding one token (fp32, KV cache) with LoRA on q_proj, k_proj and v_proj: the layer's QkvProjectionOp gains
        // lora_qkv_down and lora_qkv_up between its GEMM and qkv_split_rotary (k and v still straight into the cache), and
        // nothing else changes: 7 + 2 = 9 per layer (ADecodedTokenLaunches7KernelsPerLayerPlus3), where the three-Linear
        // fallback took 3 x 3 + 2 rotary + 2 cache_write = 13 for q/k/v alone.
        var config = ModelSource.LoadConfig(null) with { NumHiddenLayers = 2 };
        using var cuda = CudaBackend.OpenEmulated();
        using var model = Phi2Model.CreateRandom(config, cuda, seed: 1, DType.F32);
        model.Training = false;
        List<string> LayerOne()
        {
            using var scope = TensorScope.Begin();
            using var cache = new KeyValueCache(model, 1, 9);
            model.ForwardLast(model.CreateInputIds([5, 17, 202, 3, 99, 0, 150, 42], 1), cache);
            var events = ProfileRecorder.Record(() => model.ForwardLast(model.CreateInputIds([7], 1), cache));
            return [.. events.Where(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas
                && e.Module is { } m && (m == "model.layers.1" || m.StartsWith("model.layers.1.", StringComparison.Ordinal))).Select(e => e.Name)];
        }
        var plain = LayerOne();
        Assert.That(plain, Has.Count.EqualTo(7), string.Join(", ", plain));
        using var lora = LoraModel.Create(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "k_proj", "v_proj"] });
        var adapted = LayerOne();
        Assert.That(adapted, Has.Count.EqualTo(plain.Count + 2), string.Join(", ", adapted));
        Assert.That(adapted.Except(plain), Is.EquivalentTo(new[] { "lora_qkv_down_f32", "lora_qkv_up_f32" }), string.Join(", ", adapted));
    }

    [Test]
    public void TheCpuBackendRecordsItsOpsWithMeasuredTimes_AndNoLaunches()
    {
        var report = Profile(ProfileWorkload.Lora, device: "cpu", layers: 2);
        Assert.That(report.Launches, Is.Zero);
        Assert.That(report.HostSyncs, Is.Zero);
        var linear = report.Rows.Single(r => r.Name == "Linear");
        // Per layer 2 Linears (the bases of dense and fc2; q, k, v with their adapters are one QkvProjection op, whose
        // branches are one LoraQkv op inside it; fc1 with its adapter and gelu_new is one LoraLinearGelu op): 2 x 2
        // forwards (lm_head runs inside LinearCrossEntropy, with the loss); the LoRA branches' two products are inside the
        // Lora op, one per adapted Linear: 2 x 2.
        Assert.That(linear.Calls, Is.EqualTo(2 * 2));
        Assert.That(report.Rows.Single(r => r.Name == "LinearCrossEntropy").Calls, Is.EqualTo(1));
        Assert.That(linear.MeasuredMs, Is.GreaterThan(0));
        Assert.That(report.Rows.Single(r => r.Name == "Lora").Calls, Is.EqualTo(2 * 2));
        // The CPU records the outermost op only: LoraQkv runs inside QkvProjection, so it has no row of its own.
        Assert.That(report.Rows.Single(r => r.Name == "QkvProjection").Calls, Is.EqualTo(2));
        Assert.That(report.Rows.Where(r => r.Name.StartsWith("LoraQkv", StringComparison.Ordinal)), Is.Empty);
        Assert.That(report.Rows.Single(r => r.Name == "LoraLinearGelu").Calls, Is.EqualTo(2));
        // Every op is recorded (A and B train), layer 0's QkvProjection too (its input, input_layernorm of the frozen
        // embedding, needs no gradient and its weights are frozen, but its adapters train), so dense's input needs a
        // gradient in both layers.
        Assert.That(report.Rows.Single(r => r.Name == "LinearBackward").Calls, Is.EqualTo(2 * 2));
        Assert.That(report.Rows.Single(r => r.Name == "LoraBackward").Calls, Is.EqualTo(2 * 2));
        Assert.That(report.Rows.Single(r => r.Name == "QkvProjectionBackward").Calls, Is.EqualTo(2));
        Assert.That(report.Rows.Single(r => r.Name == "LoraLinearGeluBackward").Calls, Is.EqualTo(2));
        Assert.That(report.ModelH100Ms, Is.Zero, "CPU ops have no modelled GPU time");
    }

    [TestCase(ProfileWorkload.Lora), Category("Emulated")]
    [TestCase(ProfileWorkload.Train), Category("Emulated")]
    public void TheHeadAndTheLossAreChunked_AndBackwardOnlyScales(ProfileWorkload what)
    {
        // lm_head and the loss in one op (LinearCrossEntropyOp), one chunk here (8 rows): the logits GEMM with its bias in
        // the epilogue, cross_entropy_chunk (lse, target logits and the logits' gradient in place), dX (GemmEx) and, when
        // lm_head trains in full, dW and db (GemmEx each); then the loss from the gathered target logits. Backward only
        // scales what forward computed by the loss's gradient, read on the device: dX, and dW and db when they train.
        // The unfused head took 1 GEMM + cross_entropy + cross_entropy_sum forward and cross_entropy_backward + dX (+ dW,
        // db) backward, holding the [B x T, V] logits and then their gradient.
        var report = Profile(what, layers: 2);
        bool full = what == ProfileWorkload.Train;
        List<string> Head(ProfilePhase phase) => [.. report.Events
            .Where(e => e.Module == "lm_head" && e.Phase == phase && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas).Select(e => e.Name)];
        string[] forward = full
            ? ["cublasLtMatmul", "cross_entropy_chunk_f32", "cublasGemmEx", "cublasGemmEx", "cublasGemmEx", "cross_entropy_picked_sum"]
            : ["cublasLtMatmul", "cross_entropy_chunk_f32", "cublasGemmEx", "cross_entropy_picked_sum"];
        Assert.That(Head(ProfilePhase.Forward), Is.EqualTo(forward), Names(report));
        Assert.That(Head(ProfilePhase.Backward), Is.EqualTo(full ? new[] { "scale_by_f32", "accumulate_scaled_f32", "accumulate_scaled_f32" } : ["scale_by_f32"]));
        Assert.That(report.Events.Where(e => e.Name is "cross_entropy_f32" or "cross_entropy_backward_f32" or "cross_entropy_sum_f32"), Is.Empty);
        Assert.That(report.HostSyncs, Is.EqualTo(1), "the head reads nothing back: the count of scored tokens is the host's");
    }

    private static string Names(ProfileReport report) =>
        string.Join(", ", report.Rows.Select(r => $"{r.Name} x{r.Calls}"));
}
