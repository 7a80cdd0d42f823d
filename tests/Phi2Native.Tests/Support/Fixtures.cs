using Phi2Native.IO;

namespace Phi2Native.Tests.Support;

/// <summary>Paths of the committed fixtures written by tests/fixtures/make_golden.py.</summary>
public static class Fixtures
{
    /// <summary>How to regenerate the golden data; printed with every golden mismatch.</summary>
    public const string RegenerateHint = "regenerate with: apt-get install -y python3-torch && /usr/bin/python3 tests/fixtures/make_golden.py";

    private static readonly Lazy<string> s_root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Phi2Native.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no Phi2Native.sln above {AppContext.BaseDirectory}");
    });

    /// <summary>The repository root.</summary>
    public static string RepositoryRoot => s_root.Value;

    /// <summary>tests/fixtures/{relative}.</summary>
    public static string Path(string relative) => System.IO.Path.Combine(RepositoryRoot, "tests", "fixtures", relative);

    /// <summary>The model folder of a variant: f32, sharded, f16, bf16, msft.</summary>
    public static string ModelDirectory(string variant) => Path($"tiny-{variant}");

    /// <summary>Opens a variant's golden file after checking its header.</summary>
    public static SafeTensorsFile OpenGolden(string variant)
    {
        var file = SafeTensorsFile.Open(Path($"golden/{variant}.safetensors"));
        if (!file.Metadata.TryGetValue("format", out var format) || format != "phi2native-golden" ||
            !file.Metadata.TryGetValue("version", out var version) || version != "1")
        {
            file.Dispose();
            throw new InvalidDataException($"golden/{variant}.safetensors is not a version-1 phi2native-golden file; {RegenerateHint}");
        }
        return file;
    }

    /// <summary>A fresh empty temporary folder, deleted by the caller.</summary>
    public static string TemporaryDirectory()
    {
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "phi2native-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(path);
        return path;
    }
}
