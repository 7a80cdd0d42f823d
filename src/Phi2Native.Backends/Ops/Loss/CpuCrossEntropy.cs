// Fused softmax + cross-entropy over the vocabulary (the LM loss), with an ignore index for masked
// positions (padding, prompt tokens).
//
//   Forward(logits [N,V], targets [N], logSumExp [N]) -> (lossSum, count)
//       lse_r = log sum_v exp(logits[r,v])  (max-subtracted: finite for any finite logits)
//       loss_r = lse_r - logits[r, targets[r]],  summed in double over rows with targets[r] != ignoreIndex
//   Backward(logits [N,V], targets [N], logSumExp [N], scale, dLogits [N,V] =)
//       dLogits[r] = scale * (softmax(logits[r]) - onehot(targets[r])) on counted rows, 0 on ignored rows
//       (scale = dLoss / count gives the mean loss's gradient, taken as the CUDA kernel takes it).
//
// Backward needs logits, targets and the logSumExp Forward saved; the [N,V] probabilities are never
// stored. lse is written for every row, ignored ones included. The loss is summed in row order after
// the per-row work, so it does not depend on threading.
//
// Vectorized as TensorPrimitives passes over a row (forward: max, then subtract / exp / sum over
// stack chunks; backward: subtract, exp, scale into dLogits). Threads take groups of whole rows of at
// least TaskElements elements, so that small vocabularies (the demo's 512) do not pay a thread hand-off
// per row.
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Loss;

internal static class CpuCrossEntropy
{
    /// <summary><see cref="CrossEntropyOp.Forward"/> on the CPU backend, the contract checked (targets are checked here: host memory).</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor logits, Tensor targets, int ignoreIndex, int rows, int vocab,
        out Tensor logSumExp, out Tensor counted)
    {
        logSumExp = cpu.Allocate([rows], logits.DType);
        var loss = cpu.Allocate([1], logits.DType);
        counted = cpu.Allocate([1], DType.I32);
        var ids = CpuBackend.Span<int>(targets);
        var (sum, count) = logits.DType == DType.F64
            ? Forward(CpuBackend.Span<double>(logits), ids, CpuBackend.Span<double>(logSumExp), rows, vocab, ignoreIndex)
            : Forward(CpuBackend.Span<float>(logits), ids, CpuBackend.Span<float>(logSumExp), rows, vocab, ignoreIndex);
        CpuBackend.Span<int>(counted)[0] = count;
        // The mean as the CUDA kernel forms it: the sum rounded once, times the rounded 1 / count.
        if (logits.DType == DType.F64) CpuBackend.Span<double>(loss)[0] = count > 0 ? sum * (1.0 / count) : sum;
        else CpuBackend.Span<float>(loss)[0] = count > 0 ? (float)sum * (float)(1.0 / count) : (float)sum;
        return loss;
    }

    /// <summary><see cref="CrossEntropyOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor logits, Tensor targets, Tensor logSumExp, Tensor counted, Tensor? dLoss, int ignoreIndex, Tensor dLogits)
    {
        int rows = logits.Size(0), vocab = logits.Size(1), count = CpuBackend.Span<int>(counted)[0];
        var ids = CpuBackend.Span<int>(targets);
        if (logits.DType == DType.F64)
        {
            double scale = count > 0 ? 1.0 / count * (dLoss is null ? 1.0 : CpuBackend.Span<double>(dLoss)[0]) : 0;
            Backward(CpuBackend.Span<double>(logits), ids, CpuBackend.Span<double>(logSumExp), scale, CpuBackend.Span<double>(dLogits), rows, vocab, ignoreIndex);
        }
        else
        {
            float scale = count > 0 ? (float)(1.0 / count) * (dLoss is null ? 1f : CpuBackend.Span<float>(dLoss)[0]) : 0f;
            Backward(CpuBackend.Span<float>(logits), ids, CpuBackend.Span<float>(logSumExp), scale, CpuBackend.Span<float>(dLogits), rows, vocab, ignoreIndex);
        }
    }

    /// <summary>Stack scratch chunk for the exp pass (so a 51200-wide row needs no heap buffer): 4 KB float, 8 KB double.</summary>
    private const int Chunk = 1024;

    /// <summary>Least elements per parallel work item (~15 us of one core): rows are grouped up to it.</summary>
    private const int TaskElements = 16 * 1024;

    /// <summary>Per-row log-sum-exp and the summed negative log-likelihood of the targets.</summary>
    /// <param name="logits">[N, V] unnormalized scores.</param>
    /// <param name="targets">[N] target ids in [0, V), or <paramref name="ignoreIndex"/>.</param>
    /// <param name="logSumExp">[N] log-sum-exp of each row, overwritten; saved for backward.</param>
    /// <param name="rows">N.</param>
    /// <param name="vocabSize">V (&gt; 0).</param>
    /// <param name="ignoreIndex">Target value that marks a row as excluded (e.g. -100).</param>
    /// <returns>The loss summed over counted rows (in double) and how many rows were counted.</returns>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is out of range, or a target that is not
    /// ignoreIndex is outside [0, V) (the message names the row).</exception>
    public static unsafe (double lossSum, int count) Forward<TFloat>(ReadOnlySpan<TFloat> logits, ReadOnlySpan<int> targets,
        Span<TFloat> logSumExp, int rows, int vocabSize, int ignoreIndex)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CheckArgs(logits.Length, targets, rows, vocabSize, ignoreIndex);
        CpuKernelSupport.Length(logSumExp.Length, rows, nameof(logSumExp), "[N]");

        int rowsPerTask = RowsPerTask(vocabSize), tasks = (rows + rowsPerTask - 1) / rowsPerTask;
        bool parallel = CpuKernelSupport.ShouldParallelize(tasks, 3L * rows * vocabSize);
        fixed (TFloat* pl = logits, plse = logSumExp)
        {
            TFloat* lp = pl, lsep = plse;
            CpuKernelSupport.For(tasks, parallel, task =>
            {
                Span<TFloat> e = stackalloc TFloat[Math.Min(Chunk, vocabSize)];
                for (int r = task * rowsPerTask, end = Math.Min(rows, r + rowsPerTask); r < end; r++)
                {
                    var row = new ReadOnlySpan<TFloat>(lp + (long)r * vocabSize, vocabSize);
                    // Subtracting the max keeps every exp in (0, 1]: logits of 1e4 do not overflow.
                    TFloat max = TensorPrimitives.Max(row), sum = TFloat.Zero;
                    for (int v0 = 0; v0 < vocabSize; v0 += e.Length)
                    {
                        Span<TFloat> chunk = e[..Math.Min(e.Length, vocabSize - v0)];
                        TensorPrimitives.Subtract(row.Slice(v0, chunk.Length), max, chunk);
                        TensorPrimitives.Exp<TFloat>(chunk, chunk);
                        sum += TensorPrimitives.Sum<TFloat>(chunk);
                    }
                    lsep[r] = max + TFloat.Log(sum);
                }
            });
        }

        double lossSum = 0;
        int count = 0;
        for (int r = 0; r < rows; r++)
        {
            int target = targets[r];
            if (target == ignoreIndex) continue;
            lossSum += double.CreateChecked(logSumExp[r]) - double.CreateChecked(logits[r * vocabSize + target]);
            count++;
        }
        return (lossSum, count);
    }

    /// <summary>Gradient of <c>scale * lossSum</c> with respect to the logits.</summary>
    /// <param name="logits">[N, V] as in forward.</param>
    /// <param name="targets">[N] as in forward.</param>
    /// <param name="logSumExp">[N] saved by forward.</param>
    /// <param name="scale">Upstream gradient of lossSum (1/count for a mean loss).</param>
    /// <param name="dLogits">[N, V] overwritten: scale * (softmax - onehot) on counted rows, 0 on ignored ones.</param>
    /// <param name="rows">N.</param>
    /// <param name="vocabSize">V (&gt; 0).</param>
    /// <param name="ignoreIndex">As in forward.</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is out of range, or a target that is not
    /// ignoreIndex is outside [0, V).</exception>
    public static unsafe void Backward<TFloat>(ReadOnlySpan<TFloat> logits, ReadOnlySpan<int> targets,
        ReadOnlySpan<TFloat> logSumExp, double scale, Span<TFloat> dLogits, int rows, int vocabSize, int ignoreIndex)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CheckArgs(logits.Length, targets, rows, vocabSize, ignoreIndex);
        CpuKernelSupport.Length(logSumExp.Length, rows, nameof(logSumExp), "[N]");
        CpuKernelSupport.Length(dLogits.Length, (long)rows * vocabSize, nameof(dLogits), "[N, V]");

        TFloat s = TFloat.CreateChecked(scale);
        int rowsPerTask = RowsPerTask(vocabSize), tasks = (rows + rowsPerTask - 1) / rowsPerTask;
        bool parallel = CpuKernelSupport.ShouldParallelize(tasks, 3L * rows * vocabSize);
        fixed (TFloat* pl = logits, plse = logSumExp, pd = dLogits)
        fixed (int* pt = targets)
        {
            TFloat* lp = pl, lsep = plse, dp = pd;
            int* tp = pt;
            CpuKernelSupport.For(tasks, parallel, task =>
            {
                for (int r = task * rowsPerTask, end = Math.Min(rows, r + rowsPerTask); r < end; r++)
                {
                    long offset = (long)r * vocabSize;
                    var d = new Span<TFloat>(dp + offset, vocabSize);
                    int target = tp[r];
                    if (target == ignoreIndex)
                    {
                        d.Clear();
                        continue;
                    }
                    // d = s exp(logits - lse) = s softmax, straight into dLogits (no scratch).
                    TensorPrimitives.Subtract(new ReadOnlySpan<TFloat>(lp + offset, vocabSize), lsep[r], d);
                    TensorPrimitives.Exp<TFloat>(d, d);
                    TensorPrimitives.Multiply<TFloat>(d, s, d);
                    d[target] -= s;
                }
            });
        }
    }

    /// <summary>Whole rows per parallel work item: enough for TaskElements, at least one.</summary>
    private static int RowsPerTask(int vocabSize) => Math.Max(1, TaskElements / vocabSize);

    private static void CheckArgs(int logitsLength, ReadOnlySpan<int> targets, int rows, int vocabSize, int ignoreIndex)
    {
        CpuKernelSupport.NonNegative(rows, nameof(rows));
        CpuKernelSupport.Positive(vocabSize, nameof(vocabSize));
        CpuKernelSupport.Length(logitsLength, (long)rows * vocabSize, "logits", "[N, V]");
        CpuKernelSupport.Length(targets.Length, rows, nameof(targets), "[N]");
        // Checked up front, on the calling thread, so a bad target surfaces as itself rather than
        // inside an AggregateException, and before anything is written.
        for (int r = 0; r < rows; r++)
        {
            int t = targets[r];
            if (t != ignoreIndex && (uint)t >= (uint)vocabSize)
                throw new ArgumentOutOfRangeException(nameof(targets), t,
                    $"targets[{r}] (row {r}) = {t} is outside [0, {vocabSize}) and is not the ignore index {ignoreIndex}.");
        }
    }
}
