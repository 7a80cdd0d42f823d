using System.Diagnostics;
using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The emulator compiles kernels with g++ against kernels/emu: a kernel that uses CUDA outside the documented subset
/// must fail to build with a message that names what it used (kernels/emu/unsupported.h), while the GPU-only hints
/// the subset allows (<c>#pragma unroll</c>, <c>__launch_bounds__</c>) build.
/// </summary>
[TestFixture, Category("Emulated")]
public class EmulatorSubsetTests : TemporaryDirectoryTest
{
    [TestCase("__threadfence_block();", "__threadfence_block is outside the emulated CUDA subset")]
    [TestCase("__syncwarp();", "__syncwarp is outside the emulated CUDA subset")]
    [TestCase("__half h; (void)h;", "__half / __nv_bfloat16 types are outside the kernel subset")]
    [TestCase("y[0] = __bfloat162float(0);", "use bf16_to_f32 from common.cuh")]
    public void AKernelOutsideTheSubsetFailsToBuildNamingWhatItUsed(string statement, string message)
    {
        var (exitCode, output) = CompileKernel($"PHI2_KERNEL void outside(float* y) {{ {statement} y[0] = 1; }}");
        Assert.That(exitCode, Is.Not.Zero, output);
        Assert.That(output, Does.Contain(message));
    }

    [Test]
    public void GpuOnlyHintsOfTheSubsetBuild()
    {
        var (exitCode, output) = CompileKernel("""
            PHI2_KERNEL void __launch_bounds__(256) hinted(float* y, int n)
            {
            #pragma unroll
                for (int i = 0; i < 4; i++) if (i < n) y[i] = (float)i;
            }
            """);
        Assert.That(exitCode, Is.Zero, output);
    }

    // The emulator build's own flags (src/Phi2Native.Cuda/Phi2Native.Cuda.csproj, BuildKernelEmulator), syntax only.
    private (int ExitCode, string Output) CompileKernel(string kernel)
    {
        string kernels = Path.Combine(Fixtures.RepositoryRoot, "kernels");
        string source = Path.Combine(Temp, "kernel.cu");
        File.WriteAllText(source, "#include \"common.cuh\"\n" + kernel + "\n");
        var start = new ProcessStartInfo("g++")
        {
            ArgumentList = { "-x", "c++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-I", kernels, source },
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        Process process;
        try { process = Process.Start(start)!; }
        catch (System.ComponentModel.Win32Exception e) { Assert.Fail($"g++ is needed to build the emulator and was not found: {e.Message}"); throw; }
        using (process)
        {
            string output = process.StandardError.ReadToEnd() + process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output);
        }
    }
}
