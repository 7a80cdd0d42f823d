using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Optimizer;

/// <summary>
/// A training step's status block in the backend's memory: <see cref="GradientCheckOp.Measure"/> writes it (the losses,
/// the gradients' sum of squares, the first tensor that is not finite, the clip scale and the verdict) and
/// <see cref="AdamWOp.Step"/> reads its verdict and clip scale there, so the host queues the whole step without
/// waiting and reads the block once (<see cref="Read"/>). Reusable from step to step.
/// </summary>
/// <remarks>
/// A trainer that reads every few steps holds a window of blocks (<see cref="StepStatus(IBackend, int)"/>), one per
/// step: each step measures into and obeys the block at <see cref="Current"/>, and a step whose previous block in the
/// window says skip is skipped too (kernels/optimizer.cu), so the window is read in one copy (<see cref="ReadWindow"/>).
/// </remarks>
public sealed class StepStatus : IDisposable
{
    /// <summary>The block's bytes: kernels/optimizer.cu's status_block (four doubles, two ints).</summary>
    internal static readonly int Bytes = Marshal.SizeOf<Block>();

    /// <summary>A status block on <paramref name="backend"/>, holding "nothing measured" (no skip, scale 1) until measured.</summary>
    public StepStatus(IBackend backend) : this(backend, new StepStatusReport(0, 0, -1, 0, 1, false))
    {
    }

    /// <summary>A window of <paramref name="blocks"/> status blocks on <paramref name="backend"/>, each holding "nothing measured".</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blocks"/> is below 1.</exception>
    internal StepStatus(IBackend backend, int blocks)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocks, 1);
        var initial = new Block[blocks];
        Array.Fill(initial, new Block { FirstNonFinite = -1, ClipScale = 1 });
        Blocks = blocks;
        Tensor = TensorScope.Detach(backend.FromBytes(MemoryMarshal.AsBytes(initial.AsSpan()), DType.I32, [blocks * Bytes / sizeof(int)], DType.I32));
    }

    /// <summary>A status block holding <paramref name="report"/>: a step decided without measuring (device checks of the update).</summary>
    internal StepStatus(IBackend backend, StepStatusReport report)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var block = new Block
        {
            LossSum = report.LossSum, SumOfSquares = report.SumOfSquares, FirstSquares = report.FirstNonFiniteSquares,
            ClipScale = report.ClipScale, FirstNonFinite = report.FirstNonFinite, Skip = report.Skip ? 1 : 0,
        };
        Tensor = TensorScope.Detach(backend.FromBytes(MemoryMarshal.AsBytes(new Span<Block>(ref block)), DType.I32, [Bytes / sizeof(int)], DType.I32));
        Blocks = 1;
    }

    /// <summary>Blocks in the window (1 for a single step's status).</summary>
    internal int Blocks { get; }

    /// <summary>
    /// The block the next <see cref="GradientCheckOp.Measure"/> writes and <see cref="AdamWOp.Step"/> obeys, 0-based; the
    /// blocks before it are the earlier steps of the window (block 0 starts a window: no earlier step can halt it).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set outside [0, <see cref="Blocks"/>).</exception>
    internal int Current
    {
        get => _current;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(value, Blocks);
            _current = value;
        }
    }

    private int _current;

    /// <summary>Byte offset of <see cref="Current"/>'s block in <see cref="Tensor"/>.</summary>
    internal long CurrentOffset => (long)_current * Bytes;

    /// <summary>The block as an I32 tensor of <c>step_status</c>'s bytes; its backend is the one every measured tensor must be on.</summary>
    internal Tensor Tensor { get; }

    /// <summary>The backend the block lives on.</summary>
    public IBackend Backend => Tensor.Backend;

    /// <summary>Copies the block to the host: on a GPU this waits for the work queued before it (the step's one wait).</summary>
    /// <remarks>Of a window (<see cref="Blocks"/> &gt; 1), the first block.</remarks>
    public StepStatusReport Read() => ReadWindow(1)[0];

    /// <summary>The first <paramref name="count"/> blocks of the window in one copy to the host (one wait for the work queued before it).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> outside [1, <see cref="Blocks"/>].</exception>
    internal StepStatusReport[] ReadWindow(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, Blocks);
        var blocks = new Block[Blocks];
        Tensor.Backend.CopyToHost(Tensor, MemoryMarshal.AsBytes(blocks.AsSpan()));
        var reports = new StepStatusReport[count];
        for (int i = 0; i < count; i++)
        {
            var block = blocks[i];
            reports[i] = new StepStatusReport(block.LossSum, block.SumOfSquares, block.FirstNonFinite, block.FirstSquares, block.ClipScale, block.Skip != 0);
        }
        return reports;
    }

    /// <summary>Frees the block.</summary>
    public void Dispose() => Tensor.Dispose();

    /// <summary>kernels/optimizer.cu's status_block, field for field.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Block
    {
        public double LossSum;
        public double SumOfSquares;
        public double FirstSquares;
        public double ClipScale;
        public int FirstNonFinite;
        public int Skip;
    }
}

/// <summary>A training step's status as read from the device (<see cref="StepStatus.Read"/>).</summary>
/// <param name="LossSum">The measured losses added in order (in double); 0 when none were given.</param>
/// <param name="SumOfSquares">Of every measured tensor, each tensor's sum added in order (in double).</param>
/// <param name="FirstNonFinite">Index, in the measured list, of the first tensor whose sum of squares is not finite; -1 when none is.</param>
/// <param name="FirstNonFiniteSquares">That tensor's sum of squares (NaN or infinite); 0 when none.</param>
/// <param name="ClipScale">The factor the update multiplies gradients by: max norm / (norm + 1e-6) when below 1, else 1.</param>
/// <param name="Skip">True when a loss, a tensor or the total was not finite: the update changed nothing.</param>
public readonly record struct StepStatusReport(double LossSum, double SumOfSquares, int FirstNonFinite, double FirstNonFiniteSquares, double ClipScale, bool Skip)
{
    /// <summary>The global L2 norm, sqrt(<see cref="SumOfSquares"/>).</summary>
    public double Norm => Math.Sqrt(SumOfSquares);
}
