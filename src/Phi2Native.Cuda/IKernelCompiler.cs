namespace Phi2Native.Cuda;

/// <summary>The result of compiling one kernel file: a loadable image (a cubin) and the compiler's log (warnings).</summary>
/// <param name="Image">The image for cuModuleLoadData.</param>
/// <param name="Log">The compiler's log; empty when it had nothing to say.</param>
internal sealed record KernelCompilation(byte[] Image, string Log);

/// <summary>
/// Compiles one kernel file to a loadable image. The real one is <see cref="Gpu.NvrtcKernelCompiler"/>; the kernel cache
/// takes this interface so its logic (keys, disk entries, recovery) is tested with a fake compiler and no GPU.
/// </summary>
internal interface IKernelCompiler
{
    /// <summary>The compiler and its version, e.g. "NVRTC 12.8", as reports print it.</summary>
    string Version { get; }

    /// <summary>
    /// What tells this compiler apart in the cache key, so a new compiler recompiles: <see cref="Version"/>, and for
    /// NVRTC the identity of its library file too.
    /// </summary>
    string CacheIdentity => Version;

    /// <summary>
    /// Compiles <paramref name="source"/> (named <paramref name="fileName"/> in messages) with <paramref name="headers"/>
    /// available by name to <c>#include "..."</c>.
    /// </summary>
    /// <exception cref="KernelCompileException">The source did not compile; the exception carries the log.</exception>
    KernelCompilation Compile(string fileName, string source, IReadOnlyList<KernelHeader> headers, IReadOnlyList<string> options);
}
