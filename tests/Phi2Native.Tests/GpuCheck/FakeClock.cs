using Phi2Native.GpuCheck;

namespace Phi2Native.Tests.GpuCheck;

/// <summary>A run clock that moves only when a test says so: a planted slow stage "takes" seconds instantly.</summary>
internal sealed class FakeClock : IRunClock
{
    /// <inheritdoc/>
    public TimeSpan Elapsed { get; private set; }

    /// <summary>Moves the clock on by <paramref name="seconds"/>.</summary>
    public void Advance(double seconds) => Elapsed += TimeSpan.FromSeconds(seconds);
}
