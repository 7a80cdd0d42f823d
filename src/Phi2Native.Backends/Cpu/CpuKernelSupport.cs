// Shared plumbing for the CPU op kernels (CpuEmbedding, CpuLayerNorm, ...): argument checks and the
// rule for when a kernel goes multi-threaded. Nothing here knows about any one op.
namespace Phi2Native.Backends.Cpu;

internal static class CpuKernelSupport
{
    /// <summary>
    /// Below this many scalar operations per call a kernel stays on the calling thread: handing work
    /// to the thread pool costs a few microseconds, which is more than a small row takes to finish.
    /// </summary>
    public const long MinParallelWork = 1L << 16;

    /// <summary>True when <paramref name="items"/> independent pieces of <paramref name="totalWork"/>
    /// scalar operations in all are worth spreading over threads.</summary>
    public static bool ShouldParallelize(int items, long totalWork) =>
        items > 1 && totalWork >= MinParallelWork && Environment.ProcessorCount > 1;

    /// <summary>Runs <paramref name="body"/> for 0..count-1, on the thread pool when
    /// <paramref name="parallel"/> is set. Each index must write a disjoint part of the outputs, so
    /// the result does not depend on which thread ran which index.</summary>
    public static void For(int count, bool parallel, Action<int> body)
    {
        if (parallel)
        {
            Parallel.For(0, count, body);
            return;
        }
        for (int i = 0; i < count; i++) body(i);
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> when a dimension is negative.</summary>
    public static void NonNegative(int value, string name)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be >= 0.");
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> when a dimension is not positive.</summary>
    public static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be > 0.");
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming <paramref name="name"/> unless the span
    /// holds exactly <paramref name="expected"/> elements (computed in long so that huge dims do not
    /// wrap around and pass by accident).</summary>
    public static void Length(int actual, long expected, string name, string shape)
    {
        if (actual != expected)
            throw new ArgumentException($"{name} has {actual} elements; {shape} needs {expected}.", name);
    }

    /// <summary>Like <see cref="Length"/> for an optional gradient output: an empty span is allowed
    /// and means "not needed". Returns whether the gradient is wanted.</summary>
    public static bool OptionalLength(int actual, long expected, string name, string shape)
    {
        if (actual == 0) return false;
        Length(actual, expected, name, shape);
        return true;
    }
}
