// Build script: `dotnet tool restore && dotnet cake --target=<Target>`.
// Targets: Build, Test (the README's test command), Demo, Bench (CPU GEMM throughput), Publish (self-contained phi2),
// Pack (the library package and the phi2 tool package into artifacts/packages), GpuRunner (the self-contained, trimmed GPU check runner that bench/gpu-check.sh carries to a GPU machine).
var target = Argument("target", "Test");
var configuration = Argument("configuration", "Release");

Task("Build").Does(() =>
{
    DotNetBuild("Phi2Native.sln", new DotNetBuildSettings { Configuration = configuration });
});

Task("Test").IsDependentOn("Build").Does(() =>
{
    DotNetTest("Phi2Native.sln", new DotNetTestSettings { Configuration = configuration, NoBuild = true });
});

Task("Demo").Does(() =>
{
    DotNetRun("src/Phi2Native.Cli/Phi2Native.Cli.csproj", new ProcessArgumentBuilder().Append("demo"),
        new DotNetRunSettings { Configuration = configuration });
});

Task("Bench").Does(() =>
{
    DotNetRun("bench/Phi2Native.Bench/Phi2Native.Bench.csproj", new ProcessArgumentBuilder().Append("gemm"),
        new DotNetRunSettings { Configuration = "Release" });
});

Task("Publish").Does(() =>
{
    DotNetPublish("src/Phi2Native.Cli/Phi2Native.Cli.csproj", new DotNetPublishSettings
    {
        Configuration = "Release",
        Runtime = "linux-x64",
        SelfContained = true,
        OutputDirectory = "artifacts/phi2-linux-x64",
    });
});

Task("Pack").IsDependentOn("Build").Does(() =>
{
    DotNetPack("Phi2Native.sln", new DotNetPackSettings { Configuration = configuration, NoBuild = true, OutputDirectory = "artifacts/packages" });
});

// PublishTrimmed and TrimMode=partial are set in the project; the output folder is the one bench/gpu-check.sh looks in.
Task("GpuRunner").Does(() =>
{
    DotNetPublish("bench/Phi2Native.GpuCheck/Phi2Native.GpuCheck.csproj", new DotNetPublishSettings
    {
        Configuration = "Release",
        Runtime = "linux-x64",
        SelfContained = true,
        OutputDirectory = "bench/gpu-runner",
    });
});

RunTarget(target);
