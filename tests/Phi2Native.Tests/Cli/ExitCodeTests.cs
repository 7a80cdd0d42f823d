using NUnit.Framework;
using Phi2Native.Cli.Commands;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// One table of exit codes for every command: 0 done, 1 engine fault (with "please report" and the details, never
/// passed off as bad input), 2 bad input, 3 non-finite training, 130/143 stopped by SIGINT/SIGTERM (SignalTests and
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
        // A kernel that writes past its output: the emulator's guard catches it. The user's input is fine.
        const string ScaleLine = "if (i < n) store<D>(y, i, alpha * load<D>(x, i));";
        string folder = Path.Combine(Temp, "kernels");
        Directory.CreateDirectory(folder);
        string original = KernelSourceCatalog.Embedded.SourceOf("elementwise.cu");
        Assert.That(original, Does.Contain(ScaleLine));
        File.WriteAllText(Path.Combine(folder, "elementwise.cu"), original.Replace(ScaleLine, "if (i < n) store<D>(y, i + n, alpha * load<D>(x, i)); // out of bounds"));
        string? before = Environment.GetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, folder);
            var (code, output, error) = Phi2("finetune", "--data", RunFiles.Data(Temp), "--out", Path.Combine(Temp, "run"), "--max-steps", "1",
                "--batch-size", "1", "--max-length", "8", "--device", "emulated");
            Assert.That(code, Is.EqualTo(1), error);
            Assert.That(error, Does.Contain("please report").And.Contain(nameof(EmulatedDeviceException)).And.Contain("scale_f32"));
            Assert.That(output, Does.Not.Contain("done"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, before);
        }
    }
}
