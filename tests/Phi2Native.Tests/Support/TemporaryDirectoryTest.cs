using NUnit.Framework;

namespace Phi2Native.Tests.Support;

/// <summary>Base of fixtures whose tests write files: each test gets a fresh folder, deleted after it.</summary>
public abstract class TemporaryDirectoryTest
{
    /// <summary>The current test's folder.</summary>
    protected string Temp { get; private set; } = null!;

    [SetUp] public void CreateTemporaryDirectory() => Temp = Fixtures.TemporaryDirectory();

    [TearDown] public void DeleteTemporaryDirectory() => Directory.Delete(Temp, recursive: true);

    /// <summary>Runs the `phi2` command line in process, capturing both writers.</summary>
    protected static (int Code, string Output, string Error) Phi2(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Phi2Native.Cli.Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }
}
