using Phi2Native.Cuda;

namespace Phi2Native.Backends.Cuda;

/// <summary>Grid arithmetic shared by the kernel launchers.</summary>
internal static class LaunchShape
{
    /// <summary>Threads per block of the row kernels (one block per row) at most: 8 warps.</summary>
    public const uint MaxRowBlock = 256;

    /// <summary>Enough blocks of <paramref name="blockSize"/> threads to give each of <paramref name="elements"/> one thread.</summary>
    public static Dim3 Linear(long elements, uint blockSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(elements);
        long blocks = (elements + blockSize - 1) / blockSize;
        // cuLaunchKernel's grid.x limit; beyond it a kernel must loop, which these one-thread-per-element kernels do not.
        if (blocks > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(elements), elements, "too many elements for a one-dimensional grid");
        return new Dim3((uint)blocks);
    }

    /// <summary>An element count as the <c>int n</c> kernels take, refusing what does not fit.</summary>
    public static int Count(long elements, string argument)
    {
        if (elements <= 0 || elements > int.MaxValue)
            throw new ArgumentOutOfRangeException(argument, elements, "kernels take an element count in 1..2^31-1");
        return (int)elements;
    }

    /// <summary>
    /// The block of a kernel that reduces one row of <paramref name="columns"/> per block (block_sum/block_max of
    /// common.cuh): whole warps, since the reduction shuffles with a full mask, and no more warps than the row has
    /// columns for, up to <see cref="MaxRowBlock"/>. A 5-column row gets one warp, a 2560-column row 256 threads.
    /// </summary>
    public static uint RowBlock(int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        long warps = (columns + 31L) / 32;
        return (uint)Math.Min(MaxRowBlock, warps * 32);
    }
}
