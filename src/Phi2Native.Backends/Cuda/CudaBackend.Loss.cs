using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The training loop's ends: softmax cross-entropy (kernels/cross_entropy.cu) and the AdamW step (kernels/adamw.cu).
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    /// <remarks>
    /// logits [N, V] are F32 or BF16; the loss sum and logSumExp [N] are F32 (the loss is computed in fp32 whatever the
    /// logits are). The targets are read back and checked on the host first (one small synchronizing copy), so a target
    /// outside [0, V) that is not the ignore index throws the CPU backend's exception; <paramref name="counted"/> is
    /// counted from them there. The sum is the CPU's: a double sum in row order, rounded once to fp32.
    /// </remarks>
    public Tensor CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex, out Tensor logSumExp, out int counted)
    {
        var pl = Pointer(logits, nameof(logits));
        var pt = Pointer(targets, nameof(targets));
        RequireRank(logits, 2, "CrossEntropy logits [N, V]");
        RequireIds(targets, "CrossEntropy targets");
        RequireDType(logits, nameof(CrossEntropy), nameof(logits), DType.F32, DType.BF16);
        int rows = logits.Size(0), vocab = logits.Size(1);
        if (targets.ElementCount != rows)
            throw new ArgumentException($"CrossEntropy: {targets.ElementCount} targets for {rows} rows of logits", nameof(targets));
        if (vocab <= 0) throw new ArgumentException($"CrossEntropy: logits [{logits.ShapeText}] have no vocabulary", nameof(logits));
        var hostTargets = ReadInt32(targets, nameof(targets));
        counted = 0;
        for (int r = 0; r < rows; r++)
        {
            int t = hostTargets[r];
            if (t == ignoreIndex) continue;
            if ((uint)t >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), t,
                    $"targets[{r}] (row {r}) = {t} is outside [0, {vocab}) and is not the ignore index {ignoreIndex}.");
            counted++;
        }
        logSumExp = Allocate([rows], DType.F32, nameof(logSumExp));
        var loss = Allocate([1], DType.F32, "loss");
        var pLoss = Pointer(loss, "loss");
        if (rows == 0)
        {
            _device.Fill(pLoss, 0, sizeof(float), _stream);
            return loss;
        }
        var pLse = Pointer(logSumExp, nameof(logSumExp));
        CrossEntropyKernels.CrossEntropy(_device, logits.DType, pl, pt, pLse, default, rows, vocab, ignoreIndex, _stream);
        // The kernel also counts the rows; the host has counted them already, so its count is left unread (no second sync).
        using var deviceCount = Scratch(sizeof(int));
        CrossEntropyKernels.CrossEntropySum(_device, logits.DType, pl, pt, pLse, pLoss, default, deviceCount.Pointer, rows, vocab, ignoreIndex, _stream);
        return loss;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// dLogits is like logits (F32 or BF16); logSumExp is forward's F32 vector; the scale is rounded to fp32, as the CPU
    /// backend rounds it. The targets are not checked again (forward did): a bad one gives a NaN row, not an exception.
    /// </remarks>
    public void CrossEntropyBackward(Tensor logits, Tensor targets, Tensor logSumExp, int ignoreIndex, double scale, Tensor dLogits)
    {
        var pl = Pointer(logits, nameof(logits));
        var pt = Pointer(targets, nameof(targets));
        var pLse = Pointer(logSumExp, nameof(logSumExp));
        var pd = Pointer(dLogits, nameof(dLogits));
        RequireRank(logits, 2, "CrossEntropyBackward logits [N, V]");
        RequireIds(targets, "CrossEntropyBackward targets");
        RequireDType(logits, nameof(CrossEntropyBackward), nameof(logits), DType.F32, DType.BF16);
        int rows = logits.Size(0), vocab = logits.Size(1);
        RequireCount(targets, rows, $"CrossEntropyBackward targets [{rows}]");
        RequireCount(logSumExp, rows, $"CrossEntropyBackward logSumExp [{rows}]");
        RequireSameDType(logSumExp, DType.F32, nameof(CrossEntropyBackward), nameof(logSumExp));
        RequireCount(dLogits, logits.ElementCount, $"CrossEntropyBackward dLogits (like logits [{logits.ShapeText}])");
        RequireSameDType(dLogits, logits.DType, nameof(CrossEntropyBackward), nameof(dLogits));
        if (rows == 0) return;
        CrossEntropyKernels.CrossEntropyBackward(_device, logits.DType, pl, pt, pLse, (float)scale, pd, rows, vocab, ignoreIndex, _stream);
    }

    /// <inheritdoc/>
    /// <remarks>All four tensors are F32 (the kernel's only dtype: parameters that train are fp32 on this backend too).</remarks>
    public void AdamWStep(Tensor parameter, Tensor gradient, Tensor firstMoment, Tensor secondMoment, in AdamWStepArguments arguments)
    {
        var pp = Pointer(parameter, nameof(parameter));
        var pg = Pointer(gradient, nameof(gradient));
        var pm = Pointer(firstMoment, nameof(firstMoment));
        var pv = Pointer(secondMoment, nameof(secondMoment));
        foreach (var (tensor, what) in new[] { (gradient, "gradient"), (firstMoment, "first moment"), (secondMoment, "second moment") })
        {
            if (tensor.ElementCount != parameter.ElementCount || tensor.DType != parameter.DType)
                throw new ArgumentException($"AdamWStep: {what} [{tensor.ShapeText}] {tensor.DType} does not match parameter {parameter}");
        }
        RequireDType(parameter, nameof(AdamWStep), nameof(parameter), DType.F32);
        arguments.Validate();
        if (parameter.ElementCount == 0) return;
        AdamWKernels.AdamWStep(_device, DType.F32, pp, pg, pm, pv, parameter.ElementCount, arguments, _stream);
    }
}
