using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;

namespace Phi2Native.Bench;

/// <summary>
/// The <c>emulator</c> mode: what the kernel emulator (kernels/emu, through <see cref="EmulatedDevice"/>) costs per
/// launch, per block and per emulated thread. Every thread of a block is a fiber, so the cost is dominated by
/// fiber switches (one in and one out per thread, two more per warp barrier) and per-launch setup (fiber stacks,
/// the shared-memory poison). Each case is validated against a host reference before it is timed.
/// </summary>
/// <remarks>
/// Cases: add_f32 over 1M elements (4096 blocks x 256 threads, no barriers: the pure per-thread cost);
/// add_f32 over 1000 elements (4 blocks: the per-launch cost); emu_test_block_sum over 1M elements in one block
/// of 1024 threads (strided loads, two warp_sum reductions, one __syncthreads); and the same kernel over 256
/// elements in 1024 blocks of 256 threads (barrier-bound: 20 warp barriers per thread).
/// </remarks>
internal static unsafe class EmulatorBench
{
    private sealed record Case(string Name, string Kernel, int Elements, uint Grid, uint Block, int DynamicShared)
    {
        public long Threads => (long)Grid * Block;
    }

    public static int Run(ArgReader args)
    {
        int reps = args.Int("reps", 5), warmup = args.Int("warmup", 1, min: 0);
        bool markdown = args.Flag("markdown");
        args.RejectUnknown();
        Case[] cases =
        [
            new("add 1M", "add_f32", 1 << 20, 4096, 256, 0),
            new("add 1000", "add_f32", 1000, 4, 256, 0),
            new("block sum 1M, 1 block", "emu_test_block_sum", 1 << 20, 1, 1024, 1024 / 32 * sizeof(float)),
            new("block sum 256, 1024 blocks", "emu_test_block_sum", 256, 1024, 256, 256 / 32 * sizeof(float)),
        ];
        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, {Environment.ProcessorCount} cores, " +
                          $"median of {reps} after {warmup} warm-up runs, one launch per run through EmulatedDevice");
        Console.WriteLine();
        var table = new Table("case", "kernel", "grid x block", "median ms", "best ms", "us / block", "ns / thread");
        // No quarantine: every launch scans it, which would time the bench's own frees rather than the emulator.
        using var device = new EmulatedDevice(quarantineBytes: 0);
        foreach (Case c in cases)
        {
            (double median, double best) = Measure(device, c, reps, warmup);
            table.Add(c.Name, c.Kernel, $"{c.Grid}x{c.Block}", F(median, "F2"), F(best, "F2"), F(median * 1e3 / c.Grid, "F1"),
                F(median * 1e6 / c.Threads, "F0"));
        }
        table.Write(Console.Out, markdown);
        return 0;

        static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
    }

    private static (double Median, double Best) Measure(EmulatedDevice device, Case c, int reps, int warmup)
    {
        int n = c.Elements;
        // Small integers: every sum is exact in fp32, so the check is equality whatever the reduction order.
        float[] a = Enumerable.Range(0, n).Select(i => (float)(i % 13 - 6)).ToArray();
        float[] b = Enumerable.Range(0, n).Select(i => (float)(i % 5)).ToArray();
        bool add = c.Kernel == "add_f32";
        int outputs = add ? n : 1;
        DevicePtr da = device.Allocate(n * 4L), db = device.Allocate(n * 4L), dy = device.Allocate(outputs * 4L);
        try
        {
            device.CopyToDevice(da, MemoryMarshal.AsBytes(a.AsSpan()), DeviceStream.Default);
            device.CopyToDevice(db, MemoryMarshal.AsBytes(b.AsSpan()), DeviceStream.Default);
            int argN = n;
            nint[] launchArgs = add ? [(nint)(&da), (nint)(&db), (nint)(&dy), (nint)(&argN)] : [(nint)(&da), (nint)(&dy), (nint)(&argN)];
            void Launch() => device.Launch(c.Kernel, c.Grid, c.Block, c.DynamicShared, DeviceStream.Default, launchArgs);

            Launch();
            float[] y = new float[outputs];
            device.CopyToHost(MemoryMarshal.AsBytes(y.AsSpan()), dy, DeviceStream.Default);
            float[] expected = add ? a.Zip(b, (p, q) => p + q).ToArray() : [a.Sum()];
            if (!y.AsSpan().SequenceEqual(expected))
                throw new InvalidOperationException($"{c.Name}: the emulated result differs from the host reference");

            for (int i = 0; i < warmup; i++) Launch();
            var times = new double[reps];
            for (int i = 0; i < reps; i++)
            {
                long start = Stopwatch.GetTimestamp();
                Launch();
                times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            Array.Sort(times);
            return (times[reps / 2], times[0]);
        }
        finally
        {
            device.Free(da);
            device.Free(db);
            device.Free(dy);
        }
    }
}
