using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// <see cref="LoraQkvOp"/> on the CPU backend, the reference kernels/lora_qkv.cu is checked against: each present module is
/// exactly <see cref="CpuLora"/> (LoraOp's arithmetic) on its column block of the base output and of dY, so the result is
/// bit for bit three LoraOps over a q, k, v split; the blocks are copied in and out (the CPU has no launches to save).
/// </summary>
internal static class CpuLoraQkv
{
    /// <summary><see cref="LoraQkvOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, Tensor baseOutput, LoraQkvModule?[] modules, int rows, int channels, out Tensor u)
    {
        int total = modules.Sum(m => m is { } present ? present.A.Size(0) : 0);
        u = cpu.Allocate([.. x.Shape[..^1], total], x.DType == DType.F64 ? DType.F64 : DType.F32);
        var y = cpu.Cast(baseOutput, baseOutput.DType);
        int offset = 0;
        for (int m = 0; m < modules.Length; m++)
        {
            if (modules[m] is not { } module) continue;
            int rank = module.A.Size(0);
            using var block = Block(cpu, baseOutput, x, m, rows, channels);
            using var sum = CpuLora.Forward(cpu, x, block, module.A, module.B, module.Branch, new LoraShape(rows, channels, channels, rank), out var moduleU);
            using (moduleU)
            {
                Put(sum, y, m * channels, 3 * channels, rows, channels);
                Put(moduleU, u, offset, total, rows, rank);
            }
            offset += rank;
        }
        return y;
    }

    /// <summary><see cref="LoraQkvOp"/>'s backward on the CPU backend, the contract checked: dx (=, or += with <paramref name="accumulateDx"/>), the present modules' dA, dB (+=).</summary>
    public static void Backward(CpuBackend cpu, Tensor dOutput, Tensor x, Tensor u, LoraQkvModule?[] modules, Tensor? dx, Tensor?[] dA, Tensor?[] dB,
        bool accumulateDx, int rows, int channels, int accumulateA = 0b111, int accumulateB = 0b111)
    {
        int total = u.Size(-1), offset = 0;
        bool accumulate = accumulateDx;
        for (int m = 0; m < modules.Length; m++)
        {
            if (modules[m] is not { } module) continue;
            int rank = module.A.Size(0);
            using var dy = Block(cpu, dOutput, x, m, rows, channels);
            using var moduleU = cpu.Allocate([.. x.Shape[..^1], rank], u.DType);
            Take(u, moduleU, offset, total, rows, rank);
            CpuLora.Backward(cpu, dy, x, module.A, module.B, moduleU, module.Branch, new LoraShape(rows, channels, channels, rank), dx, dA[m], dB[m],
                accumulate, ((accumulateA >> m) & 1) != 0, ((accumulateB >> m) & 1) != 0);
            accumulate |= dx is not null;
            offset += rank;
        }
    }

    // Column block m [..., C] (x's shape) of a [..., 3 C] tensor, copied out.
    internal static Tensor Block(CpuBackend cpu, Tensor wide, Tensor x, int m, int rows, int channels)
    {
        var block = cpu.Allocate(x.Shape, wide.DType);
        Take(wide, block, m * channels, 3 * channels, rows, channels);
        return block;
    }

    private static void Take(Tensor from, Tensor to, int offset, int stride, int rows, int width)
    {
        if (from.DType == DType.F64) Copy(CpuBackend.Span<double>(from), offset, stride, CpuBackend.Span<double>(to), 0, width, rows, width);
        else Copy(CpuBackend.Span<float>(from), offset, stride, CpuBackend.Span<float>(to), 0, width, rows, width);
    }

    internal static void Put(Tensor from, Tensor to, int offset, int stride, int rows, int width)
    {
        if (from.DType == DType.F64) Copy(CpuBackend.Span<double>(from), 0, width, CpuBackend.Span<double>(to), offset, stride, rows, width);
        else Copy(CpuBackend.Span<float>(from), 0, width, CpuBackend.Span<float>(to), offset, stride, rows, width);
    }

    private static void Copy<T>(Span<T> from, int fromOffset, int fromStride, Span<T> to, int toOffset, int toStride, int rows, int width)
    {
        for (int n = 0; n < rows; n++)
            from.Slice(n * fromStride + fromOffset, width).CopyTo(to.Slice(n * toStride + toOffset, width));
    }
}
