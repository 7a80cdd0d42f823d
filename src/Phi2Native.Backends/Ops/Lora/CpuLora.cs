// The LoRA branch on the CPU backend, the reference kernels/lora.cu is checked against. It runs the very arithmetic of the
// unfused ops LoraLinear recorded before the op existed, in their order, so an fp32 or f64 model's results are unchanged
// bit for bit:
//   forward   xd = dropout(x) (CpuDropout; x itself at p = 0); u = xd A^T; update = u B^T (CpuLinear, CpuGemm);
//             update *= scaling (skipped at 1); y = base + update
//   backward  g = scaling * dY (a scaled copy; dY itself at 1); du = g B, dB += g^T u; dxd = du A, dA += du^T xd (xd
//             recomputed from the seed); dx = dropout'(dxd)
// On the CPU, x, the base and the adapter share one dtype (F32, or F64 for gradient checks): no casts.
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

internal static class CpuLora
{
    /// <summary><see cref="LoraOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, Tensor baseOutput, Tensor a, Tensor b, LoraBranch branch, LoraShape shape, out Tensor u)
    {
        using var dropped = Dropped(cpu, x, branch);
        u = CpuLinear.Forward(cpu, dropped ?? x, a, null, shape.Rows, shape.In, shape.Rank);
        using var update = CpuLinear.Forward(cpu, u, b, null, shape.Rows, shape.Rank, shape.Out);
        if (branch.Scaling != 1) cpu.ScaleInPlace(update, branch.Scaling);
        return cpu.Add(baseOutput, update);
    }

    /// <summary><see cref="LoraOp.Backward(Tensor, Tensor, Tensor, Tensor, Tensor, LoraBranch, Tensor?, Tensor?, Tensor?, bool, bool, bool)"/> on the CPU backend, the contract checked.</summary>
    public static void Backward(CpuBackend cpu, Tensor dOutput, Tensor x, Tensor a, Tensor b, Tensor u, LoraBranch branch, LoraShape shape,
        Tensor? dx, Tensor? dA, Tensor? dB, bool accumulateDx = false, bool accumulateA = true, bool accumulateB = true)
    {
        // A gradient to be written (=) is the accumulated one from zero: the CPU's products accumulate.
        if (dA is not null && !accumulateA) Zero(dA);
        if (dB is not null && !accumulateB) Zero(dB);
        if (accumulateDx && dx is not null)
        {
            // dx += the branch's: taken fresh and added, bit for bit the fresh gradient delivered and added.
            using var fresh = cpu.Empty(dx.Shape, dx.DType);
            Backward(cpu, dOutput, x, a, b, u, branch, shape, fresh, dA, dB);
            cpu.AddInPlace(dx, fresh);
            return;
        }
        using var scaled = branch.Scaling != 1 ? cpu.Cast(dOutput, dOutput.DType) : null;
        if (scaled is not null) cpu.ScaleInPlace(scaled, branch.Scaling);
        var g = scaled ?? dOutput;
        using var du = dx is not null || dA is not null ? cpu.Empty(u.Shape, u.DType) : null;
        CpuLinear.Backward(g, u, b, du, dB, null, shape.Rows, shape.Rank, shape.Out);
        if (du is null) return;
        using var dropped = dA is not null ? Dropped(cpu, x, branch) : null;
        CpuLinear.Backward(du, dropped ?? x, a, dx, dA, null, shape.Rows, shape.In, shape.Rank);
        if (dx is not null && branch.Dropout > 0) CpuDropout.Backward(dx, dx, branch.Dropout, branch.Seed);
    }

    private static void Zero(Tensor gradient)
    {
        if (gradient.DType == DType.F64) CpuBackend.Span<double>(gradient).Clear();
        else CpuBackend.Span<float>(gradient).Clear();
    }

    // dropout(x) as DropoutOp computes it, or null at p = 0 (x itself).
    private static Tensor? Dropped(CpuBackend cpu, Tensor x, LoraBranch branch) =>
        branch.Dropout > 0 ? CpuDropout.Forward(cpu, x, branch.Dropout, branch.Seed) : null;
}
