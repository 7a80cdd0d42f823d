using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Qkv;

// QkvProjectionOp on the CPU backend, the reference kernels/qkv.cu is checked against: the unfused ops it replaces, one
// Linear per projection (CpuLinear), RotaryOp's rotation of q and k (CpuRotary) and KvCacheOp's cache write, so the
// fused op on the CPU is by construction what the three-Linear path computes.
//   forward   q = rotary(x Wq^T + bq), k = rotary(x Wk^T + bk), v = x Wv^T + bv, each [B, T, H, D]
//   backward  gq = rotary^-1(dq), gk = rotary^-1(dk), gv = dv;  dx += g_v Wv, += g_k Wk, += g_q Wq;  dW_j += g_j^T x;  db_j += column sums of g_j
// With LoRA modules the three base outputs are assembled into [B, T, 3C], CpuLoraQkv (three LoraOps' arithmetic, bit for
// bit) adds the branches, and each block is split out again: the forward is the three-LoRA-Linear path's exactly. Backward,
// the g_j assembled into one [B, T, 3C] go through CpuLoraQkv first (dA, dB, dx of the branches), then the base products
// above; only the order of the dx additions differs from the three-Linear path's (all branches, then v, k, q's bases).
internal static class CpuQkvProjection
{
    /// <summary><see cref="QkvProjectionOp"/>'s forward on the CPU backend, the contract checked.</summary>
    public static (Tensor Q, Tensor? K, Tensor? V) Forward(CpuBackend cpu, Tensor x, QkvParameters p, QkvShape shape, Tensor? positions, Tensor? keys, Tensor? values,
        out Tensor? u)
    {
        int batch = x.Size(0), time = x.Size(1), c = x.Size(2), rows = batch * time;
        var heads = new List<Tensor>(3);
        u = null;
        Tensor? adapted = null;
        try
        {
            if (p.Adapted)
            {
                using var qkv = cpu.Allocate([batch, time, 3 * c], x.DType);
                for (int j = 0; j < 3; j++)
                {
                    using var projected = CpuLinear.Forward(cpu, x, p.Weights[j], p.Biases[j], rows, c, c);
                    CpuLoraQkv.Put(projected, qkv, j * c, 3 * c, rows, c);
                }
                adapted = LoraQkvOp.Forward(x, qkv, p.Adapters!, out var saved);
                u = saved;
            }
            for (int j = 0; j < 3; j++)
            {
                using var y = adapted is null ? CpuLinear.Forward(cpu, x, p.Weights[j], p.Biases[j], rows, c, c) : CpuLoraQkv.Block(cpu, adapted, x, j, rows, c);
                using var split = y.Reshape(batch, time, shape.Heads, shape.HeadDim);
                heads.Add(j < 2 && shape.RotaryDim > 0 ? CpuRotary.Forward(cpu, split, shape.RotaryDim, shape.Theta, positions) : split.Reshape(split.Shape.ToArray()));
            }
            if (keys is null) return (heads[0], heads[1], heads[2]);
            KvCacheOp.Write(heads[1], keys, positions!);
            KvCacheOp.Write(heads[2], values!, positions!);
            heads[1].Dispose();
            heads[2].Dispose();
            return (heads[0], null, null);
        }
        catch
        {
            foreach (var head in heads) head.Dispose();
            u?.Dispose();
            u = null;
            throw;
        }
        finally
        {
            adapted?.Dispose();
        }
    }

    /// <summary>
    /// <see cref="QkvProjectionOp"/>'s backward on the CPU backend, the contract checked. dx (+=) gains v's, then k's,
    /// then q's product, each added once: the order and roundings of the three Linears' backward on the tape (recorded
    /// q, k, v, run v, k, q), so CPU training is bit for bit what it was before the fusion (the embedded base's recipe).
    /// </summary>
    public static void Backward(Tensor? dq, Tensor? dk, Tensor? dv, Tensor x, QkvParameters p, QkvShape shape, Tensor? positions,
        Tensor? dx, Tensor?[] weightGradients, Tensor?[] biasGradients, QkvAdapterGradients? adapters = null)
    {
        var backend = x.Backend;
        int batch = x.Size(0), time = x.Size(1), c = x.Size(2), rows = batch * time;
        Tensor?[] gradients = [dq, dk, dv];
        var unrotated = new Tensor?[3];
        try
        {
            for (int j = 0; j < 3; j++)
            {
                if (gradients[j] is not { } gradient || j == 2 || shape.RotaryDim == 0) continue;
                unrotated[j] = backend.Empty(gradient.Shape, gradient.DType);
                CpuRotary.Backward(gradient, unrotated[j]!, shape.RotaryDim, shape.Theta, positions);
            }
            if (adapters is not null)
            {
                // The branches see the one [B, T, 3C] gradient (zeros where none reached a projection), as on the device.
                using var dqkv = backend.Zeros([batch, time, 3 * c], x.DType);
                for (int j = 0; j < 3; j++)
                    if ((unrotated[j] ?? gradients[j]) is { } g) CpuLoraQkv.Put(g, dqkv, j * c, 3 * c, rows, c);
                adapters.Apply(dqkv, x, dx);
            }
            for (int j = 2; j >= 0; j--)
            {
                if (gradients[j] is not { } gradient) continue; // no gradient reached this projection: it adds nothing
                using var partial = dx is null ? null : backend.Empty(dx.Shape, dx.DType);
                CpuLinear.Backward(unrotated[j] ?? gradient, x, p.Weights[j], partial, weightGradients[j], biasGradients[j], rows, c, c);
                if (partial is not null) backend.AddInPlace(dx!, partial);
            }
        }
        finally
        {
            foreach (var tensor in unrotated) tensor?.Dispose();
        }
    }

    /// <summary>
    /// What qkv_split_rotary computes from one GEMM's output, on host arrays (the device checks' reference): qkv
    /// [B T, 3C] -> q, k, v [B, T, H, D] (in fp32; the caller rounds to the kernel's dtype), every row at offset
    /// positions[b] (null: 0) through <see cref="CpuRotary"/>.
    /// </summary>
    public static (float[] Q, float[] K, float[] V) SplitRotary(ReadOnlySpan<float> qkv, int batch, int time, QkvShape shape, int[]? positions)
    {
        int c = shape.Heads * shape.HeadDim, rowElements = time * c;
        var blocks = new float[3][];
        for (int j = 0; j < 3; j++)
        {
            blocks[j] = new float[batch * rowElements];
            for (int r = 0; r < batch * time; r++) qkv.Slice(r * 3 * c + j * c, c).CopyTo(blocks[j].AsSpan(r * c, c));
            if (j == 2) break;
            for (int b = 0; b < batch; b++)
            {
                var block = blocks[j].AsSpan(b * rowElements, rowElements);
                int offset = positions?[b] ?? 0;
                CpuRotary.Forward<float>(block.ToArray(), block, 1, time, shape.Heads, shape.HeadDim, shape.RotaryDim, shape.Theta, offset);
            }
        }
        return (blocks[0], blocks[1], blocks[2]);
    }

    /// <summary>
    /// What qkv_split_rotary_backward computes, on host arrays (the device checks' reference): dq, dk, dv [B, T, H, D]
    /// (null: zeros) -> dqkv [B T, 3C], dq and dk rotated back at offset positions[b] (null: 0) through <see cref="CpuRotary"/>.
    /// </summary>
    public static float[] SplitRotaryBackward(float[]? dq, float[]? dk, float[]? dv, int batch, int time, QkvShape shape, int[]? positions)
    {
        int c = shape.Heads * shape.HeadDim, rowElements = time * c;
        var dqkv = new float[batch * time * 3 * c];
        float[]?[] gradients = [dq, dk, dv];
        for (int j = 0; j < 3; j++)
        {
            if (gradients[j] is not { } gradient) continue;
            var block = (float[])gradient.Clone();
            for (int b = 0; j < 2 && b < batch; b++)
                CpuRotary.Backward<float>(gradient.AsSpan(b * rowElements, rowElements), block.AsSpan(b * rowElements, rowElements), 1, time, shape.Heads,
                    shape.HeadDim, shape.RotaryDim, shape.Theta, positions?[b] ?? 0);
            for (int r = 0; r < batch * time; r++) block.AsSpan(r * c, c).CopyTo(dqkv.AsSpan(r * 3 * c + j * c, c));
        }
        return dqkv;
    }
}
