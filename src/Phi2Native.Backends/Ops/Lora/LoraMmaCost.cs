using Phi2Native.Profiling;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// The flops of kernels/lora_mma.cuh's tensor-core products as the kernels issue them: every mma.m16n8k16 counts 2 x 16 x
/// 8 x 16 = 4096 tensor-core flops, the zero padding of rows, columns and ranks to the tile included (3 mmas a tile for a
/// bf16 x fp32 product, 6 for fp32 x fp32); the SIMT flops are the fp32 operand's hi/mid/lo split (2 subtractions a
/// value, each time a warp splits it), the fixed-order reduction of the 8 warps' partial sums and the epilogue's scalings.
/// The bytes stay the launchers' (each byte once).
/// </summary>
internal static class LoraMmaCost
{
    private const long FlopsPerMma = 2L * 16 * 8 * 16;
    private const int Warps = 8;

    private static long Tiles(long size, int tile) => (size + tile - 1) / tile;

    /// <summary>lora_mma_weight_grad: grad [width, rank] (=, or += with <paramref name="accumulate"/>) from left [rows, width] bf16 and right [rows, rank] fp32.</summary>
    public static KernelCost WeightGradient(long bytesRead, long bytesWritten, long rows, long width, long rank, bool masked, bool accumulate)
    {
        long rowSteps = Tiles(rows, 16), rankTiles = Tiles(rank, 8);
        long mmas = 3 * rowSteps * Tiles(width, 16) * rankTiles;
        // Each warp splits its 16 x 8 B fragment (128 values) per row step and rank tile, in each 32-column block.
        long split = 2 * 128 * rowSteps * rankTiles * Tiles(width, 32);
        long reduce = width * rank * ((Warps - 1) + 2 + (accumulate ? 1 : 0));
        return new KernelCost(bytesRead, bytesWritten, mmas * FlopsPerMma, split + reduce + (masked ? rows * width : 0));
    }

    /// <summary>lora_mma_row_times_weight: out [rows, rank] fp32 = x [rows, width] bf16 times the fp32 weight's [rank, width].</summary>
    public static KernelCost RowTimesWeight(long bytesRead, long bytesWritten, long rows, long width, long rank, bool masked)
    {
        long rankTiles = Tiles(rank, 8), columnSteps = Tiles(width, 16);
        long mmas = 3 * Tiles(rows, 16) * columnSteps * rankTiles;
        // Each warp splits its 16 x 8 B fragment per column step and rank tile, in each 32-row block.
        long split = 2 * 128 * Tiles(rows, 32) * columnSteps * rankTiles;
        long reduce = rows * rank * ((Warps - 1) + 2);
        return new KernelCost(bytesRead, bytesWritten, mmas * FlopsPerMma, split + reduce + (masked ? rows * width : 0));
    }

    /// <summary>
    /// lora_mma_expand: r [rows, rank] times w [rank, width], both fp32, a warp 32 rows x <paramref name="columnsPerWarp"/>;
    /// <paramref name="epilogueFlops"/> (the mask, keep_scale, the add into dx) beside it.
    /// </summary>
    public static KernelCost Expand(long bytesRead, long bytesWritten, long rows, long width, long rank, int columnsPerWarp, long epilogueFlops)
    {
        long rankSteps = Tiles(rank, 16);
        long mmas = 6 * Tiles(rows, 16) * Tiles(width, 8) * rankSteps;
        // A warp splits its 32 x 16 A values per rank step, and each 16 x 8 B fragment.
        long warps = Tiles(rows, 32) * Tiles(width, columnsPerWarp);
        long split = 2 * (warps * 32 * 16 + Tiles(rows, 32) * Tiles(width, 8) * 128) * rankSteps;
        return new KernelCost(bytesRead, bytesWritten, mmas * FlopsPerMma, split + epilogueFlops);
    }
}
