using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// CUDA graphs on the emulated device (EmulatedDevice.Graphs.cs): a capture records, a graph launch replays what was
/// recorded in order with the arguments' values of capture time and the buffers' contents of launch time, an update
/// keeps the handle only for the same kernels, and what global-mode capture refuses on a GPU is refused here and
/// invalidates the capture. Expected values are computed on the host.
/// </summary>
[TestFixture, Category("Emulated")]
public class EmulatedGraphTests
{
    private const int N = 300;

    private static float[] Values(int seed) => [.. Enumerable.Range(0, N).Select(i => (float)((i * 7 + seed) % 13) - 6)];

    [Test]
    public void ALaunchReplaysTheCapturedWorkOnTheBuffersAsTheyAreThen()
    {
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        float[] a = Values(1), b = Values(2);
        using var x = DeviceBuffer.Upload(device, DType.F32, a);
        using var y = DeviceBuffer.Upload(device, DType.F32, b);
        using var sum = DeviceBuffer.Upload(device, DType.F32, new float[N]);
        using var copy = DeviceBuffer.Upload(device, DType.F32, new float[N]);

        device.BeginCapture(stream);
        ElementwiseKernels.Add(device, DType.F32, x.Pointer, y.Pointer, sum.Pointer, N, stream);
        ElementwiseKernels.Scale(device, DType.F32, sum.Pointer, sum.Pointer, 0.5f, N, stream);
        device.CopyOnDevice(copy.Pointer, sum.Pointer, N * sizeof(float), stream);
        device.Fill(x.Pointer, 0, N * sizeof(float), stream);
        var graph = device.EndCapture(stream);
        Assert.That(sum.Download(), Is.All.EqualTo(0f), "capturing runs nothing");

        device.LaunchGraph(graph, stream);
        float[] expected = [.. a.Zip(b, (p, q) => (p + q) * 0.5f)];
        Assert.That(sum.Download(), Is.EqualTo(expected));
        Assert.That(copy.Download(), Is.EqualTo(expected));
        Assert.That(x.Download(), Is.All.EqualTo(0f));

        // The second launch reads x as it is now (zeroed by the first): the graph holds pointers, not contents.
        device.LaunchGraph(graph, stream);
        Assert.That(sum.Download(), Is.EqualTo(b.Select(q => q * 0.5f).ToArray()));
        device.DestroyGraph(graph);
        Assert.That(() => device.LaunchGraph(graph, stream), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("destroyed"));
    }

    [Test]
    public void AnUpdateKeepsTheGraphForTheSameKernelsAndReplacesItOtherwise()
    {
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        float[] a = Values(3);
        using var x = DeviceBuffer.Upload(device, DType.F32, a);
        using var y = DeviceBuffer.Allocate(device, DType.F32, N);

        device.BeginCapture(stream);
        ElementwiseKernels.Scale(device, DType.F32, x.Pointer, y.Pointer, 2f, N, stream);
        var graph = device.EndCapture(stream);

        // The same kernel with another scale (a value copied at capture): updated in place.
        device.BeginCapture(stream);
        ElementwiseKernels.Scale(device, DType.F32, x.Pointer, y.Pointer, 3f, N, stream);
        Assert.That(device.EndCapture(stream, reuse: graph), Is.EqualTo(graph));
        device.LaunchGraph(graph, stream);
        Assert.That(y.Download(), Is.EqualTo(a.Select(v => v * 3f).ToArray()));

        // Another kernel: a new graph, and the old one destroyed.
        device.BeginCapture(stream);
        ElementwiseKernels.Add(device, DType.F32, x.Pointer, x.Pointer, y.Pointer, N, stream);
        var replaced = device.EndCapture(stream, reuse: graph);
        Assert.That(replaced, Is.Not.EqualTo(graph));
        Assert.That(() => device.LaunchGraph(graph, stream), Throws.InstanceOf<EmulatedDeviceException>());
        device.LaunchGraph(replaced, stream);
        Assert.That(y.Download(), Is.EqualTo(a.Select(v => v + v).ToArray()));
    }

    [Test]
    public void MatrixProductsAreCapturedToo()
    {
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        // C [2 x 3] = A [2 x 4] B [4 x 3], column-major as cuBLAS reads them.
        float[] a = [1, 2, 3, 4, 5, 6, 7, 8], b = [1, 0, 2, 1, 0, 1, 3, 1, 1, 1, 1, 1];
        using var da = DeviceBuffer.Upload(device, DType.F32, a);
        using var db = DeviceBuffer.Upload(device, DType.F32, b);
        using var dc = DeviceBuffer.Upload(device, DType.F32, new float[6]);
        device.BeginCapture(stream);
        device.Blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, 2, 3, 4, 1f, da.Pointer, DType.F32, 2, db.Pointer, DType.F32, 4,
            0f, dc.Pointer, DType.F32, 2, stream);
        var graph = device.EndCapture(stream);
        Assert.That(dc.Download(), Is.All.EqualTo(0f));
        device.LaunchGraph(graph, stream);
        var expected = new float[6];
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int p = 0; p < 4; p++) expected[i + 2 * j] += a[i + 2 * p] * b[p + 4 * j];
        Assert.That(dc.Download(), Is.EqualTo(expected));
    }

    [Test]
    public void WhatMakesTheHostWaitOrMovesHostMemoryIsRefusedAndSpoilsTheCapture()
    {
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        using var x = DeviceBuffer.Upload(device, DType.F32, Values(4));

        foreach (var (what, act) in new (string, Action)[]
        {
            ("CopyToHost", () => x.Download(stream)),
            ("Synchronize", () => device.Synchronize(stream)),
            ("CopyToDevice", () => device.CopyToDevice(x.Pointer, new byte[4], stream)),
        })
        {
            device.BeginCapture(stream);
            Assert.That(act, Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("capturing"), what);
            Assert.That(() => device.EndCapture(stream), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("invalidated by " + what), what);
        }
        // Other streams are not capturing: they still work, and the stream can capture again.
        Assert.That(x.Download(), Is.EqualTo(Values(4)));
    }

    [Test]
    public void OnlyTheCachingAllocatorsHitsMayAllocateDuringACapture()
    {
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        device.Free(device.Allocate(4096));   // a cached 4 KiB block
        device.BeginCapture(stream);
        var hit = device.Allocate(4096);
        device.Free(hit);
        Assert.That(() => device.Allocate(64L << 20), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("driver allocation"));
        Assert.That(() => device.EndCapture(stream), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("invalidated by Allocate"));
    }

    [Test]
    public void TemporariesOfACaptureStayTheGraphsUntilItIsDestroyed()
    {
        // A temporary allocated and freed inside the capture is written and read on every replay: it stays mapped (not
        // quarantined), is counted as no one's allocation, and goes when the graph does. A re-capture into the graph's
        // pool (an update) needs no new memory.
        using var device = new EmulatedDevice();
        var stream = device.CreateStream();
        using var x = DeviceBuffer.Upload(device, DType.F32, Values(4));
        using var y = DeviceBuffer.Allocate(device, DType.F32, N);
        device.Free(device.Allocate(N * sizeof(float)));   // the cache's block the capture takes
        device.BeginCapture(stream);
        var temporary = device.Allocate(N * sizeof(float));
        ElementwiseKernels.Add(device, DType.F32, x.Pointer, x.Pointer, temporary, N, stream);   // temporary = 2x
        ElementwiseKernels.Add(device, DType.F32, temporary, x.Pointer, y.Pointer, N, stream);   // y = 3x
        device.Free(temporary);
        var graph = device.EndCapture(stream);
        int live = device.Memory.LiveAllocations;
        device.LaunchGraph(graph, stream);
        device.LaunchGraph(graph, stream);
        Assert.That(y.Download(), Is.EqualTo(Values(4).Select(v => 3 * v).ToArray()));

        device.BeginCapture(stream, graph);
        var again = device.Allocate(N * sizeof(float));
        ElementwiseKernels.Add(device, DType.F32, x.Pointer, x.Pointer, again, N, stream);
        ElementwiseKernels.Add(device, DType.F32, again, again, y.Pointer, N, stream);   // y = 4x
        device.Free(again);
        Assert.That(device.EndCapture(stream, graph), Is.EqualTo(graph));
        device.LaunchGraph(graph, stream);
        Assert.That(y.Download(), Is.EqualTo(Values(4).Select(v => 4 * v).ToArray()));
        device.DestroyGraph(graph);
        Assert.That(device.Memory.LiveAllocations, Is.EqualTo(live));
        Assert.That(() => device.Free(temporary), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("already freed"));
    }

    [Test]
    public void CaptureNeedsACreatedStreamThatIsNotAlreadyCapturing()
    {
        using var device = new EmulatedDevice();
        Assert.That(() => device.BeginCapture(DeviceStream.Default), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("default stream"));
        var stream = device.CreateStream();
        device.BeginCapture(stream);
        Assert.That(() => device.BeginCapture(stream), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("already capturing"));
        Assert.That(() => device.DestroyStream(stream), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("end the capture"));
        device.EndCapture(stream);
        Assert.That(() => device.EndCapture(stream), Throws.InstanceOf<EmulatedDeviceException>().With.Message.Contains("not capturing"));
    }
}
