using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Decoding;

/// <summary>
/// The end of a decode step (inference only, no gradient): each row's greedy token from logits [B, V] (or [B, 1, V])
/// into ids (I32, B elements: where the next step's embedding reads them), the lowest id among equal maxima (as the
/// host sampler's ArgMax), -1 for a row holding a NaN; then a KV cache's per-row offsets and key times (I32 [B], each
/// optional) advanced by one in place. Without logits only the positions advance (the host sampled and uploads the ids).
/// On the CUDA backend it is one launch and reads nothing back, so a captured decode step can end with it. The contract
/// is checked here, once.
/// </summary>
internal static class DecodeNextOp
{
    /// <summary>The op and the logits dtypes each backend reads.</summary>
    public static BackendOp Info { get; } = new("DecodeNext", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    /// <summary>Chooses the ids (when <paramref name="logits"/> is given) and advances the positions.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract, or nothing is asked for.</exception>
    public static void Apply(Tensor? logits, Tensor? ids, Tensor? offsets, Tensor? keyTimes)
    {
        const string op = "DecodeNext";
        var any = logits ?? ids ?? offsets ?? keyTimes ?? throw new ArgumentException($"{op}: give logits and ids, or positions to advance", nameof(logits));
        var backend = any.Backend;
        int rows, vocab = 0;
        if (logits is not null)
        {
            Info.RequireSupported(logits, nameof(logits));
            vocab = logits.Size(-1);
            rows = vocab == 0 ? 0 : (int)(logits.ElementCount / vocab);
            if (ids is null) throw new ArgumentNullException(nameof(ids), $"{op}: logits need an ids tensor to write the chosen tokens into");
        }
        else rows = (int)(ids ?? offsets ?? keyTimes)!.ElementCount;
        foreach (var (tensor, name) in new[] { (ids, nameof(ids)), (offsets, nameof(offsets)), (keyTimes, nameof(keyTimes)) })
        {
            if (tensor is null) continue;
            OpContract.OnBackend(tensor, backend, op, name);
            OpContract.DType(tensor, DType.I32, op, name);
            OpContract.Count(tensor, rows, op, name, "one per logits row");
        }
        if (rows == 0) return;
        switch (backend)
        {
            case CpuBackend: OnCpu(logits, ids, offsets, keyTimes, rows, vocab); break;
            case CudaBackend cuda:
                DecodeNextKernels.DecodeNext(cuda.DeviceApi, logits?.DType ?? DType.F32, Pointer(cuda, logits, nameof(logits)), Pointer(cuda, ids, nameof(ids)),
                    Pointer(cuda, offsets, nameof(offsets)), Pointer(cuda, keyTimes, nameof(keyTimes)), rows, Math.Max(vocab, 1), cuda.Stream);
                break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }

    private static DevicePtr Pointer(CudaBackend cuda, Tensor? tensor, string name) => tensor is null ? default : cuda.Pointer(tensor, name);

    // The reference: a scan in id order, strictly greater wins, a NaN anywhere gives -1.
    private static void OnCpu(Tensor? logits, Tensor? ids, Tensor? offsets, Tensor? keyTimes, int rows, int vocab)
    {
        if (logits is not null)
        {
            var chosen = CpuBackend.Span<int>(ids!);
            double[] values = logits.ToDoubleArray();
            for (int r = 0; r < rows; r++)
            {
                var row = values.AsSpan(r * vocab, vocab);
                int best = 0;
                for (int c = 0; c < vocab && best >= 0; c++)
                {
                    if (double.IsNaN(row[c])) best = -1;
                    else if (row[c] > row[best]) best = c;
                }
                chosen[r] = best;
            }
        }
        foreach (var positions in new[] { offsets, keyTimes })
            if (positions is not null)
                foreach (ref int p in CpuBackend.Span<int>(positions)) p++;
    }
}
