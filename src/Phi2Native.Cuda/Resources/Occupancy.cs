namespace Phi2Native.Cuda.Resources;

/// <summary>What stops one more block of a kernel from fitting on an SM.</summary>
internal enum OccupancyLimit
{
    /// <summary>The SM's resident-block limit.</summary>
    Blocks,
    /// <summary>The SM's resident-thread (warp) limit.</summary>
    Threads,
    /// <summary>The register file.</summary>
    Registers,
    /// <summary>Shared memory.</summary>
    SharedMemory,
}

/// <summary>A kernel's theoretical occupancy on one architecture: resident blocks and warps per SM, and why no more.</summary>
/// <param name="BlocksPerSm">Blocks resident on one SM at once (0: the block does not fit at all).</param>
/// <param name="WarpsPerSm">Their warps.</param>
/// <param name="Fraction">Resident warps over the SM's maximum, 0..1.</param>
/// <param name="Limit">The resource that bounds <paramref name="BlocksPerSm"/>.</param>
internal sealed record Occupancy(int BlocksPerSm, int WarpsPerSm, double Fraction, OccupancyLimit Limit)
{
    /// <summary>
    /// The occupancy calculator's rule. Registers: a warp takes registers-per-thread x 32 rounded up to the
    /// allocation unit, from its scheduler's quarter of the file. Shared memory: static + dynamic + the per-block
    /// reservation, rounded up to the allocation unit. Threads and blocks: the SM's limits.
    /// </summary>
    /// <param name="architecture">The architecture.</param>
    /// <param name="registers">Registers per thread, as ptxas reports them (0..255).</param>
    /// <param name="staticShared">Static shared memory per block, as ptxas reports it (without the reservation).</param>
    /// <param name="dynamicShared">Dynamic shared memory per block, as the launcher asks for it.</param>
    /// <param name="blockThreads">Threads per block, 1..1024.</param>
    /// <exception cref="ArgumentOutOfRangeException">A negative figure, or a block of no or more than 1024 threads.</exception>
    public static Occupancy Theoretical(GpuArchitecture architecture, int registers, int staticShared, int dynamicShared, int blockThreads)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        ArgumentOutOfRangeException.ThrowIfNegative(registers);
        ArgumentOutOfRangeException.ThrowIfNegative(staticShared);
        ArgumentOutOfRangeException.ThrowIfNegative(dynamicShared);
        if (blockThreads is < 1 or > 1024) throw new ArgumentOutOfRangeException(nameof(blockThreads), blockThreads, "a block has 1..1024 threads");

        int warpsPerBlock = (blockThreads + GpuArchitecture.WarpSize - 1) / GpuArchitecture.WarpSize;
        var limits = new List<(int Blocks, OccupancyLimit Limit)>
        {
            (architecture.BlocksPerSm, OccupancyLimit.Blocks),
            (architecture.WarpsPerSm / warpsPerBlock, OccupancyLimit.Threads),
        };
        if (registers > 0)
        {
            int perWarp = RoundUp(registers * GpuArchitecture.WarpSize, architecture.RegisterUnit);
            int warpsPerScheduler = architecture.RegistersPerSm / GpuArchitecture.SchedulersPerSm / perWarp;
            limits.Add((warpsPerScheduler * GpuArchitecture.SchedulersPerSm / warpsPerBlock, OccupancyLimit.Registers));
        }
        int shared = staticShared + dynamicShared;
        int sharedBlocks = shared > architecture.SharedPerBlockOptIn
            ? 0
            : architecture.SharedPerSm / RoundUp(shared + architecture.SharedReservedPerBlock, architecture.SharedUnit);
        limits.Add((sharedBlocks, OccupancyLimit.SharedMemory));

        var (blocks, limit) = limits.MinBy(l => l.Blocks);
        int warps = blocks * warpsPerBlock;
        return new Occupancy(blocks, warps, (double)warps / architecture.WarpsPerSm, limit);
    }

    private static int RoundUp(int value, int unit) => (value + unit - 1) / unit * unit;
}
