namespace Phi2Native.GpuCheck;

/// <summary>One stage of a GPU run and the wall time it may take.</summary>
/// <param name="Name">What the stage tables call it.</param>
/// <param name="Budget">No case of the stage starts after this much time in it; children it started are killed at it.</param>
internal sealed record Stage(string Name, TimeSpan Budget);

/// <summary>
/// The GPU run's stages in order, with their budgets: the one place they are set. GPU time comes in windows of about
/// 15 minutes (machine start and a rerun included), so the whole run keeps to <see cref="Total"/>, which
/// bench/gpu-check.sh uses as its outer timeout (a test keeps the two equal). A later stage is added here.
/// </summary>
internal static class Stages
{
    /// <summary>CUDA probe, opening the device, NVRTC for every kernel file (which fills the kernel disk cache the children read).</summary>
    public static readonly Stage ProbeAndCompile = new("probe and compile", TimeSpan.FromSeconds(30));

    /// <summary>Every device check against its CPU reference, a child process per family.</summary>
    public static readonly Stage Checks = new("checks", TimeSpan.FromSeconds(90));

    /// <summary>compute-sanitizer's memcheck and racecheck over the shared-memory and warp-level families (<see cref="SanitizerStage"/>).</summary>
    public static readonly Stage Sanitizer = new("compute-sanitizer", TimeSpan.FromSeconds(60));

    /// <summary>Our benchmarks at Phi-2 sizes (<see cref="Benchmarks"/>); 100 s since the two greedy-decoding cases joined, so the LoRA step (last, about 40 s) still fits.</summary>
    public static readonly Stage Benchmarks = new("benchmarks", TimeSpan.FromSeconds(100));

    /// <summary>Peer frameworks on the same machine (bench/peers/*.py; <see cref="PeersStage"/>).</summary>
    public static readonly Stage Peers = new("peers", TimeSpan.FromSeconds(60));

    /// <summary>The stages, in the order they run.</summary>
    public static IReadOnlyList<Stage> All { get; } = [ProbeAndCompile, Checks, Sanitizer, Benchmarks, Peers];

    /// <summary>The sum of the budgets: 340 s, under 6 minutes, bench/gpu-check.sh's outer timeout.</summary>
    public static TimeSpan Total { get; } = TimeSpan.FromTicks(All.Sum(s => s.Budget.Ticks));

    /// <summary>
    /// What the runner keeps back from <see cref="Total"/> for itself: starting up, killing children, printing the
    /// tables. Its default --time-limit is <see cref="Total"/> minus this, so it ends before the outer timeout.
    /// </summary>
    public static TimeSpan Reserve { get; } = TimeSpan.FromSeconds(10);
}
