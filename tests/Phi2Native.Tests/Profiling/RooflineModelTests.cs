using NUnit.Framework;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;

namespace Phi2Native.Tests.Profiling;

/// <summary>The roofline model's arithmetic on cases computed by hand, and MFU's convention.</summary>
[TestFixture]
public class RooflineModelTests
{
    private static readonly RooflineModel H100 = new(GpuFigures.H100), H200 = new(GpuFigures.H200);

    [Test]
    public void AMemoryBoundKernelTakesItsBytesAtTheKernelsBandwidthPlusTheLaunch()
    {
        // 1 GB read + 1 GB written by a hand-written kernel: 2e9 / (3.35e12 x 0.6) = 0.99502 ms, + 4 us launched alone,
        // + 1 us in a graph; H200: 2e9 / (4.8e12 x 0.6) = 0.69444 ms. 1e9 SIMT flops at 67e12 x 0.3 take 0.0498 ms: less.
        var cost = new KernelCost(1_000_000_000, 1_000_000_000, 0, 1_000_000_000);
        Assert.That(H100.Seconds(cost, blas: false), Is.EqualTo(0.99502488e-3 + 4e-6).Within(1e-9));
        Assert.That(H100.Seconds(cost, blas: false, inGraph: true), Is.EqualTo(0.99502488e-3 + 1e-6).Within(1e-9));
        Assert.That(H200.Seconds(cost, blas: false), Is.EqualTo(0.69444444e-3 + 4e-6).Within(1e-9));
    }

    [Test]
    public void ABf16GemmIsComputeBoundAtTheMeasuredGemmRate()
    {
        // 8192^3 in bf16: 2 x 8192^3 = 1.0995e12 tensor-core flops at 989e12 x 0.79 = 781.31 TFLOP/s: 1.40726 ms; its
        // 3 x 8192^2 x 2 bytes (402.7 MB) at 3.0 TB/s take 0.134 ms: compute wins.
        var cost = new KernelCost(2L * 8192 * 8192 * 2, 8192L * 8192 * 2, 2L * 8192 * 8192 * 8192, 0);
        double flops = 2.0 * 8192 * 8192 * 8192;
        Assert.That(H100.Seconds(cost, blas: true), Is.EqualTo(flops / (989e12 * 0.79) + 4e-6).Within(1e-9));
        Assert.That(flops / (989e12 * 0.79), Is.EqualTo(1.40726e-3).Within(1e-8));
        // MFU of that GEMM alone (launch included): 1.0995e12 / (989e12 x 1.41126 ms) = 0.7878.
        Assert.That(H100.Mfu(flops, H100.Seconds(cost, blas: true)), Is.EqualTo(0.7878).Within(1e-4));
    }

    [Test]
    public void FlopsBelow90PercentTensorCoreRunAtTheSimtRate()
    {
        // 85 % declared on tensor cores: the whole 1e12 flops go at the SIMT rate of cuBLAS (67e12 x 0.7): 21.322 ms.
        var cost = new KernelCost(0, 0, 850_000_000_000, 150_000_000_000);
        Assert.That(H100.Seconds(cost, blas: true), Is.EqualTo(1e12 / (67e12 * 0.7) + 4e-6).Within(1e-9));
        // 90 %: tensor-core flops at the tensor rate, the rest at the SIMT rate, added.
        var mostly = new KernelCost(0, 0, 900_000_000_000, 100_000_000_000);
        Assert.That(H100.Seconds(mostly, blas: true), Is.EqualTo(9e11 / (989e12 * 0.79) + 1e11 / (67e12 * 0.7) + 4e-6).Within(1e-9));
    }

    [Test]
    public void ModelFlopsFollowTheStatedConvention()
    {
        // Phi-2: per layer q, k, v, dense 4 (2560^2 + 2560), fc1 and fc2 2 x 2560 x 10240 + 10240 + 2560, two LayerNorm
        // vectors 2 x 2560 (input_layernorm): 4 x 6,556,160 + 52,441,600 + 12,800 + 5,120; 32 layers; + the final LayerNorm.
        long perLayer = 4L * (2560 * 2560 + 2560) + 2L * 2560 * 10240 + 10240 + 2560 + 2 * 2560;
        long layers = 32 * perLayer + 2 * 2560;
        Assert.That(ModelFlops.LayerParameters(Phi2Config.Phi2), Is.EqualTo(layers));
        long n = layers + 51200L * 2561;
        Assert.That(ModelFlops.MatmulParameters(Phi2Config.Phi2), Is.EqualTo(n));
        // A LoRA step, B 4, T 2048, P = 1e6: 8192 x (4N + 6e6 + 6 x 32 x 2560 x 2048).
        Assert.That(ModelFlops.Lora(Phi2Config.Phi2, 4, 2048, 1_000_000), Is.EqualTo(8192.0 * (4.0 * n + 6e6 + 6.0 * 32 * 2560 * 2048)).Within(1e3));
        // A decoded token after 2000: 2N + 4 x 32 x 2560 x 2000.
        Assert.That(ModelFlops.Decode(Phi2Config.Phi2, 1, 2000), Is.EqualTo(2.0 * n + 4.0 * 32 * 2560 * 2000).Within(1));
    }
}
