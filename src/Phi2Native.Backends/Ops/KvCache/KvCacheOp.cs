using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.KvCache;

/// <summary>
/// The KV-cache write of generation (inference only): keys or values source [B, T, H, D] go to rows [p, p + T) of
/// cache [B, Tmax, H, D], p = positions[b] for batch row b (I32 [B] on the backend; a cache's rows may hold different
/// lengths). The cache's other rows are untouched; an exact move of the stored bits. Positions outside [0, Tmax - T]:
/// the CPU backend throws, the CUDA backend (which reads them on the device, no host wait) skips that row. The
/// contract is checked here, once.
/// </summary>
internal static class KvCacheOp
{
    /// <summary>The op and the dtypes each backend stores caches in (on the CPU a move of any float dtype).</summary>
    public static BackendOp Info { get; } = new("KvCacheWrite", [DType.F32, DType.F64, DType.F16, DType.BF16], [DType.F32, DType.BF16]);

    /// <summary>Writes <paramref name="source"/> into <paramref name="cache"/> at each row's position.</summary>
    /// <exception cref="ArgumentException">source and cache differ in B, H, D or dtype, T exceeds Tmax, or positions are not I32 [B].</exception>
    /// <exception cref="ArgumentOutOfRangeException">A row's rows fall outside the cache (the CPU backend; see the class).</exception>
    public static void Write(Tensor source, Tensor cache, Tensor positions)
    {
        const string op = "KvCacheWrite";
        OpContract.OnBackend(source, source?.Backend!, op, nameof(source));
        OpContract.OnBackend(cache, source!.Backend, op, nameof(cache));
        OpContract.OnBackend(positions, source.Backend, op, nameof(positions));
        Info.RequireSupported(source, nameof(source));
        OpContract.Rank(source, 4, op, nameof(source), "[B, T, H, D]");
        OpContract.Rank(cache, 4, op, nameof(cache), "[B, Tmax, H, D]");
        if (cache.Size(0) != source.Size(0) || cache.Size(2) != source.Size(2) || cache.Size(3) != source.Size(3) || cache.DType != source.DType)
            throw new ArgumentException($"{op}: source [{source.ShapeText}] {source.DType} does not fit cache [{cache.ShapeText}] {cache.DType} (need the same B, H, D and dtype)", nameof(cache));
        if (source.Size(1) > cache.Size(1))
            throw new ArgumentException($"{op}: T = {source.Size(1)} rows do not fit the cache's {cache.Size(1)} at any position", nameof(source));
        OpContract.Vector(positions, source.Size(0), op, nameof(positions));
        OpContract.DType(positions, DType.I32, op, nameof(positions));
        if (source.ElementCount == 0) return;
        switch (source.Backend)
        {
            case CpuBackend: WriteOnCpu(source, cache, positions); break;
            case CudaBackend cuda:
                CacheKernels.CacheWrite(cuda.DeviceApi, source.DType, cuda.Pointer(source, nameof(source)), cuda.Pointer(cache, nameof(cache)),
                    cuda.Pointer(positions, nameof(positions)), source.Size(0), source.Size(1), source.Size(2), source.Size(3), cache.Size(1), cuda.Stream);
                break;
            default: throw OpContract.NoImplementation(Info, source.Backend);
        }
    }

    // Row t of batch b of the cache starts at element (b * Tmax + t) * H * D: each batch row's T rows are one block.
    private static void WriteOnCpu(Tensor source, Tensor cache, Tensor positions)
    {
        int batch = source.Size(0), time = source.Size(1), capacity = cache.Size(1);
        var rows = CpuBackend.Span<int>(positions);
        int rowBytes = source.Size(2) * source.Size(3) * source.DType.SizeInBytes();
        Span<byte> from = CpuBackend.Bytes(source), to = CpuBackend.Bytes(cache);
        for (int b = 0; b < batch; b++)
            if (rows[b] < 0 || rows[b] + time > capacity)
                throw new ArgumentOutOfRangeException(nameof(positions), rows[b], $"KvCacheWrite: row {b}'s rows [{rows[b]}, {rows[b] + time}) are outside the cache's {capacity}");
        for (int b = 0; b < batch; b++)
            from.Slice(b * time * rowBytes, time * rowBytes).CopyTo(to.Slice((b * capacity + rows[b]) * rowBytes, time * rowBytes));
    }
}
