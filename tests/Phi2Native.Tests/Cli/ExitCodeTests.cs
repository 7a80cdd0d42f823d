using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cli.Commands;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// One table of exit codes for every command: 0 done, 1 engine fault (with "please report" and the details, never
/// passed off as bad input; each kind also raised for real: a kernel overrun the emulator catches, a BLAS call refused
/// for its arguments, a failed CUDA library call), 2 bad input, 3 non-finite training, 130/143 stopped by SIGINT/SIGTERM (SignalTests and
/// NonFiniteTrainingTests run those for real); ReadmeExampleTests checks the README's table.
/// </summary>
[TestFixture]
public class ExitCodeTests : TemporaryDirectoryTest
{
    private static (int Code, string Error) Guarded(Func<int> action)
    {
        var error = new StringWriter();
        int code = CommandErrors.Guard(error, action);
        return (code, error.ToString());
    }

    private static IEnumerable<TestCaseData> EngineFaults()
    {
        yield return new TestCaseData(new CudaException(CudaException.DriverLibrary, "cuLaunchKernel", 700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"))
            .SetArgDisplayNames("CudaException");
        yield return new TestCaseData(new EmulatedDeviceException("Launch", "kernel scale_f32 wrote out of bounds", "scale_f32")).SetArgDisplayNames("EmulatedDeviceException");
        yield return new TestCaseData(new BlasArgumentException("GemmEx", "lda", "lda = 3 is less than 5")).SetArgDisplayNames("BlasArgumentException");
        yield return new TestCaseData(new InvalidOperationException("a bug")).SetArgDisplayNames("unexpected");
    }

    [TestCaseSource(nameof(EngineFaults))]
    public void AnEngineFaultIsExitCode1AskingForAReportWithTheDetails(Exception fault)
    {
        var (code, error) = Guarded(() => throw fault);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(error, Does.Contain("please report").And.Contain(fault.GetType().Name).And.Contain(fault.Message).And.Contain("   at "));
        Assert.That(error, Does.Not.StartWith("error:"), "not worded as the user's mistake");
    }

    // The three kinds of engine fault, each raised for real by the engine's own code rather than constructed.

    [Test, Category("Emulated")]
    public void AKernelLaunchThatOverrunsItsBuffersIsExitCode1()
    {
        using var device = new EmulatedDevice();
        using var x = DeviceBuffer.Allocate(device, DType.F32, 64);
        using var y = DeviceBuffer.Allocate(device, DType.F32, 64);
        // A launcher misuse: a launcher sees pointers, not sizes, so n = 1024 over 64-element buffers passes its checks,
        // and the emulator's guard pages catch the kernel reading and writing past the ends.
        var (code, error) = Guarded(() =>
        {
            ElementwiseKernels.Scale(device, DType.F32, x.Pointer, y.Pointer, 2f, 1024);
            return 0;
        });
        Assert.That(code, Is.EqualTo(ExitCodes.EngineFault), error);
        Assert.That(error, Does.Contain("please report").And.Contain(nameof(EmulatedDeviceException)).And.Contain("scale_f32").And.Contain("out of bounds"));
    }

    [Test, Category("Emulated")]
    public void ABlasCallWithBadArgumentsIsExitCode1()
    {
        using var device = new EmulatedDevice();
        using var a = DeviceBuffer.Allocate(device, DType.F32, 64);
        using var b = DeviceBuffer.Allocate(device, DType.F32, 64);
        using var c = DeviceBuffer.Allocate(device, DType.F32, 64);
        // A 4 x 3 x 5 product whose lda (3) is below A's 4 stored rows: cuBLAS refuses it, and so does the emulated IBlas.
        var (code, error) = Guarded(() =>
        {
            device.Blas.GemmEx(BlasOperation.NoTranspose, BlasOperation.NoTranspose, 4, 3, 5, 1, a.Pointer, DType.F32, 3, b.Pointer, DType.F32, 5,
                0, c.Pointer, DType.F32, 4, default);
            return 0;
        });
        Assert.That(code, Is.EqualTo(ExitCodes.EngineFault), error);
        Assert.That(error, Does.Contain("please report").And.Contain(nameof(BlasArgumentException)).And.Contain("lda = 3"));
    }

    [Test, Category("Nvrtc")]
    public void AFailedCudaLibraryCallIsExitCode1()
    {
        // Without a GPU the one CUDA library that runs is NVRTC (where it is installed): a call on a program that does
        // not exist fails with NVRTC's own status, as a CUDA driver or cuBLAS call that fails on a GPU does.
        var nvrtc = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc);
        if (nvrtc.Handle == 0)
        {
            if (Environment.GetEnvironmentVariable("PHI2NATIVE_REQUIRE_NVRTC") == "1") Assert.Fail($"PHI2NATIVE_REQUIRE_NVRTC=1, but NVRTC did not load: {nvrtc.Failure}");
            Assert.Ignore($"needs NVRTC: {nvrtc.Failure}");
        }
        var (code, error) = Guarded(() =>
        {
            Nvrtc.Check(Nvrtc.nvrtcGetProgramLogSize(0, out _));
            return 0;
        });
        Assert.That(code, Is.EqualTo(ExitCodes.EngineFault), error);
        Assert.That(error, Does.Contain("please report").And.Contain(nameof(CudaException)).And.Contain("nvrtcGetProgramLogSize")
            .And.Contain("NVRTC_ERROR_INVALID_PROGRAM"));
    }

    [Test]
    public void BadInputIsExitCode2OnOneLine()
    {
        foreach (var bad in new Exception[] { new Phi2Exception("--lr must be positive"), new ModelInputException("id 9 is outside"), new IOException("disk full") })
        {
            var (code, error) = Guarded(() => throw bad);
            Assert.That(code, Is.EqualTo(2), bad.GetType().Name);
            Assert.That(error, Is.EqualTo($"error: {bad.Message}{Environment.NewLine}"));
        }
        Assert.That(Guarded(() => 0).Code, Is.EqualTo(0));
    }

    [Test, Category("Emulated")]
    public void AKernelOutOfBoundsOnTheEmulatedDeviceIsAnEngineFault_NotBadInput()
    {
        // A kernel that writes past its output: the emulator's guard catches it. The user's input is fine. lora_up (the
        // LoRA branch added to each adapted Linear's output) runs in every LoRA fine-tuning step that adapts dense, fc2 or a
        // Linear outside q/k/v (q_proj, k_proj and v_proj take lora_qkv_up, fc1 lora_up_gelu): dense is targeted.
        const string UpLine = "if (MODE == LORA_EXPAND_UP) store<D>(out, index, __fadd_rn(load<D>(base, index), __fmul_rn(sums[i], scaling)));";
        string folder = Path.Combine(Temp, "kernels");
        Directory.CreateDirectory(folder);
        string original = KernelSourceCatalog.Embedded.SourceOf("lora.cu");
        Assert.That(original, Does.Contain(UpLine));
        File.WriteAllText(Path.Combine(folder, "lora.cu"), original.Replace(UpLine,
            "if (MODE == LORA_EXPAND_UP) store<D>(out, index + (long long)rows * width, __fadd_rn(load<D>(base, index), __fmul_rn(sums[i], scaling))); // out of bounds"));
        string? before = Environment.GetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, folder);
            var (code, output, error) = Phi2("finetune", "--data", RunFiles.Data(Temp), "--out", Path.Combine(Temp, "run"), "--max-steps", "1",
                "--batch-size", "1", "--max-length", "8", "--device", "emulated", "--target", "q_proj,dense");
            Assert.That(code, Is.EqualTo(1), error);
            Assert.That(error, Does.Contain("please report").And.Contain(nameof(EmulatedDeviceException)).And.Contain("lora_up_f32"));
            Assert.That(output, Does.Not.Contain("done"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, before);
        }
    }
}
