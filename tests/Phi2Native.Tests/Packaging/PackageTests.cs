using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using NUnit.Framework;
using Phi2Native.Embedded;
using Phi2Native.Hosting;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Packaging;

/// <summary>
/// The packages as a host gets them: `dotnet pack` of the library and of the phi2 tool (from this build, with a version
/// of their own so that no copy restored earlier can stand in), a throwaway console project that references the library
/// package from a local folder and generates on the CPU and on the emulated device (the native emulator taken from the
/// package's runtimes/linux-x64/native), and the tool installed with `dotnet tool install --tool-path` and run. The
/// reference for what each generates or tokenizes is this test's own build of the same code, in process.
/// </summary>
/// <remarks>
/// Explicit and slow (a minute or two: two packs, a restore, a build, a tool install): `dotnet test` leaves it out, and
/// CI runs it once, `--filter TestCategory=Packaging`. Restores go into a temporary packages folder, with the machine's
/// own as a read-only fallback and its package sources as configured, so nothing lands in the machine's folder.
/// </remarks>
[TestFixture, Category("Packaging"), Explicit("slow: packs and builds a host project; run with --filter TestCategory=Packaging")]
[Platform("Linux", Reason = "the library package carries the kernel emulator for linux-x64 only")]
public sealed class PackageTests
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif
    private const string Prompt = "And God said";
    private const int MaxNewTokens = 8;

    private string _root = null!, _packages = null!, _version = null!;

    [OneTimeSetUp]
    public void PackBoth()
    {
        _root = Fixtures.TemporaryDirectory();
        _packages = Path.Combine(_root, "packages");
        // --no-build: the packages carry exactly the assemblies these tests were built with.
        string suffix = "packaging-test." + Guid.NewGuid().ToString("N")[..12];
        foreach (string project in new[] { "src/Phi2Native", "src/Phi2Native.Cli" })
            Run("dotnet", ["pack", Path.Combine(Fixtures.RepositoryRoot, project), "-c", Configuration, "--no-build", "-o", _packages, $"-p:VersionSuffix={suffix}"], _root);
        string library = Directory.GetFiles(_packages, "Phi2Native.0*.nupkg").Single();
        _version = Path.GetFileNameWithoutExtension(library)["Phi2Native.".Length..];
        Assert.That(Directory.GetFiles(_packages, $"Phi2Native.Cli.{_version}.nupkg"), Has.Length.EqualTo(1));
        File.WriteAllText(Path.Combine(_root, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config>
                <add key="globalPackagesFolder" value="{Path.Combine(_root, "restored")}" />
              </config>
              <packageSources>
                <add key="phi2native-packed" value="{_packages}" />
              </packageSources>
              <fallbackPackageFolders>
                <add key="machine" value="{MachinePackagesFolder()}" />
              </fallbackPackageFolders>
            </configuration>
            """);
    }

    [OneTimeTearDown]
    public void DeleteRoot()
    {
        if (_root is not null && Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    [Test]
    public void AHostBuiltAgainstTheLibraryPackageGeneratesOnTheCpuAndOnTheEmulatedDeviceFromThePackagesNativeLibrary()
    {
        string host = Path.Combine(_root, "host");
        Directory.CreateDirectory(host);
        File.WriteAllText(Path.Combine(host, "host.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Phi2Native" Version="{_version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(host, "Program.cs"), $$"""
            using Phi2Native.Hosting;
            using Phi2Native.Text;

            foreach (string device in new[] { "cpu", "emulated" })
            {
                using var engine = Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Parse(device) });
                var result = engine.Generate(engine.EncodePrompt("{{Prompt}}"), new GenerationOptions { MaxNewTokens = {{MaxNewTokens}} });
                Console.WriteLine($"{device}: {string.Join(",", result.Tokens)}");
            }
            """);
        Run("dotnet", ["build", "-c", "Release", "-nologo"], host);
        string bin = Path.Combine(host, "bin", "Release", "net10.0");
        Assert.That(File.Exists(Path.Combine(bin, "runtimes", "linux-x64", "native", "libphi2emu.so")), "the package's native emulator in the host's runtimes folder");
        Assert.That(File.Exists(Path.Combine(bin, "libphi2emu.so")), Is.False, "no emulator beside the host's assemblies: the one in runtimes/ is the one that must load");

        string output = Run("dotnet", [Path.Combine(bin, "host.dll")], host);

        using var engine = Phi2Engine.Load();
        var expected = engine.Generate(engine.EncodePrompt(Prompt), new GenerationOptions { MaxNewTokens = MaxNewTokens }).Tokens;
        Assert.That(expected, Has.Count.EqualTo(MaxNewTokens));
        Assert.That(output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), Is.EqualTo(new[]
        {
            $"cpu: {string.Join(",", expected)}",
            $"emulated: {string.Join(",", expected)}",
        }));
    }

    [Test]
    public void TheToolPackageInstallsAsPhi2AndRuns()
    {
        string tools = Path.Combine(_root, "tools");
        Run("dotnet", ["tool", "install", "Phi2Native.Cli", "--version", _version, "--tool-path", tools, "--add-source", _packages], _root);
        string phi2 = Path.Combine(tools, "phi2");

        Assert.That(Run(phi2, ["--help"], _root), Does.Contain("tokenize").And.Contain("finetune"));
        const string text = "In the beginning God created the heaven and the earth.";
        string ids = Run(phi2, ["tokenize", "--text", text, "--quiet"], _root).Trim().Split('\n')[^1];
        Assert.That(ids, Is.EqualTo(string.Join(",", EmbeddedDefault.Tokenizer().Encode(text))));
        string generated = Run(phi2, ["generate", "--prompt", Prompt, "--max-tokens", MaxNewTokens.ToString(), "--print-ids", "--device", "emulated", "--quiet"], _root);

        using var engine = Phi2Engine.Load();
        var expected = engine.Generate(engine.EncodePrompt(Prompt), new GenerationOptions { MaxNewTokens = MaxNewTokens }).Tokens;
        Assert.That(generated.Trim(), Is.EqualTo(string.Join(",", expected)));
    }

    // Where this machine's NuGet keeps restored packages (NUGET_PACKAGES or ~/.nuget/packages), read from NuGet itself.
    private string MachinePackagesFolder()
    {
        string line = Run("dotnet", ["nuget", "locals", "global-packages", "--list"], _root).Trim();
        const string prefix = "global-packages: ";
        Assert.That(line, Does.StartWith(prefix), "dotnet nuget locals global-packages --list");
        return line[prefix.Length..];
    }

    // Runs a program to its end (10 minutes at most), failing the test with its output when it exits non-zero.
    private static string Run(string program, IReadOnlyList<string> arguments, string workingDirectory)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        // The tool's launcher finds the runtime through DOTNET_ROOT: the one running these tests.
        start.Environment["DOTNET_ROOT"] = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = new Process { StartInfo = start };
        var output = new StringBuilder();
        var error = new StringBuilder();
        process.OutputDataReceived += (_, e) => { lock (output) if (e.Data != null) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (error) if (e.Data != null) error.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        string command = $"{program} {string.Join(" ", arguments)}";
        if (!process.WaitForExit(TimeSpan.FromMinutes(10)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{command}: still running after 10 minutes\n{output}\n{error}");
        }
        process.WaitForExit();
        if (process.ExitCode != 0) Assert.Fail($"{command}: exit code {process.ExitCode}\n{output}\n{error}");
        return output.ToString();
    }
}
