using System.CommandLine;
using Phi2Native.Backends;
using Phi2Native.Hosting;
using Phi2Native.Tensors;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// --device (and, where a command has it, --dtype) of the commands that compute: parsed into a
/// <see cref="DeviceRequest"/>, which <see cref="BackendChoice.Open"/> turns into a backend.
/// </summary>
internal sealed class DeviceOptions
{
    public readonly Option<string> Device = new("--device")
    {
        Description = "Where to compute: cpu (default), cuda or cuda:N (the CUDA backend on GPU N), or emulated (the CUDA backend with its " +
                      "kernels run on the CPU by the kernel emulator: much slower than cpu, for checking the CUDA path without a GPU).",
        DefaultValueFactory = _ => "cpu",
    };

    /// <summary>--dtype, or null for a command without one (it computes in f32).</summary>
    public readonly Option<string>? ComputeDType;

    /// <param name="dtypeDescription">The help text of the command's --dtype, or null when it has none.</param>
    public DeviceOptions(string? dtypeDescription)
    {
        if (dtypeDescription is not null) ComputeDType = new Option<string>("--dtype") { Description = dtypeDescription, DefaultValueFactory = _ => "f32" };
    }

    /// <summary>The --dtype help of the inference commands (generate, trace).</summary>
    public const string InferenceDTypeDescription =
        "Compute dtype: f32 (default) or bf16 (bf16 weights and activations, fp32 accumulation, statistics, softmax and loss; " +
        "the CUDA backend only; a --adapter stays fp32 beside the bf16 base).";

    public IEnumerable<Option> All => ComputeDType is null ? [Device] : [Device, ComputeDType];

    /// <summary>What the command line said; a value that is not a device or a dtype is one message naming the option.</summary>
    public DeviceRequest Read(ParseResult result) =>
        DeviceRequest.Parse(result.GetValue(Device) ?? "cpu", ComputeDType is null ? "f32" : result.GetValue(ComputeDType) ?? "f32");
}

/// <summary>A device and compute dtype as the command line asked for them, checked for spelling only.</summary>
internal sealed record DeviceRequest(DeviceChoice Device, DType DType)
{
    /// <summary>The CPU in f32: what commands without --device use.</summary>
    public static DeviceRequest Cpu { get; } = new(DeviceChoice.Cpu, DType.F32);

    /// <exception cref="Phi2Exception">--device or --dtype is not one of its values (the message names the option).</exception>
    public static DeviceRequest Parse(string device, string dtype)
    {
        if (!DeviceChoice.TryParse(device, out var choice))
            throw new Phi2Exception($"--device \"{device}\" is not one of {DeviceChoice.Spellings}");
        var computeDType = dtype.Trim().ToLowerInvariant() switch
        {
            "f32" or "float32" => DType.F32,
            "bf16" or "bfloat16" => DType.BF16,
            _ => throw new Phi2Exception($"--dtype \"{dtype}\" is not one of f32, bf16"),
        };
        return new DeviceRequest(choice, computeDType);
    }

    /// <summary>"f32" or "bf16", as the option spells it.</summary>
    public static string Name(DType dtype) => ComputeDTypes.Name(dtype);
}
