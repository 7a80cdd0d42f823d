using System.Runtime.Intrinsics;
using System.Security.Cryptography;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Embedded;

/// <summary>
/// The pretrained base the embedded default ships: the embedded model (<see cref="EmbeddedDefault.Config"/>) trained
/// from random weights (seed <see cref="EmbeddedDefault.DefaultSeed"/>) on the training chapters of
/// <see cref="EmbeddedBook.Genesis"/> only, so that Exodus stays a text it has never seen. <c>phi2 demo --make-base
/// PATH</c> runs this recipe; its output is the shipped <c>src/Phi2Native/Embedded/base.safetensors</c> byte for byte.
/// </summary>
/// <remarks>
/// <para>Reproducible because every step is: the random weights come from a seed, the data order from another, no
/// dropout is drawn (resid_pdrop 0), and the CPU backend's arithmetic does not depend on how many threads run it
/// (its threads split outputs, never a sum: each product element and each reduction is computed in one fixed order
/// whatever the core count: checked with 1, 2, 3, 5 and 8 threads). The vector width does change the rounding of
/// vectorized sums, so the result is recorded for each width it was run on (<see cref="ReferenceSha256"/>); the shipped
/// file is the 256-bit one. bench/RESULTS.md ("The pretrained base") has the runs.</para>
/// </remarks>
public static class EmbeddedBase
{
    /// <summary>SHA-256 of the shipped <c>base.safetensors</c>, lower-case hex: the recipe's result on <see cref="ShippedVectorWidth"/>-bit vectors.</summary>
    public const string ShippedSha256 = "2253affcacbd2df081aec8034a825e8d575ac4a256e6dfdb11bc4693ef06929f";

    /// <summary>
    /// The vector width, in bits, of the arithmetic that made the shipped base: 256 (AVX2), which every x64 machine of the
    /// last decade has. A machine with AVX-512 computes with 512-bit vectors unless told otherwise
    /// (<c>DOTNET_PreferredVectorBitWidth=256</c>), and its sums round differently (<see cref="ReferenceSha256"/>).
    /// </summary>
    public const int ShippedVectorWidth = 256;

    /// <summary>The recipe's result on 512-bit vectors (AVX-512), recorded so that such a machine can check its own reproduction.</summary>
    private const string Sha256On512BitVectors = "27ee215e362707c6e62f86cffcb26cefd8e3d192a9eed6b85a89872a57aeed94";

    /// <summary>The vector width this process computes with: 512 (AVX-512), 256 (AVX2) or 128 (SSE, ARM's Neon).</summary>
    public static int VectorWidth =>
        Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 128;

    /// <summary>
    /// What the recipe gives on <paramref name="vectorWidth"/>-bit vectors: <see cref="ShippedSha256"/> for 256, the recorded
    /// result for 512, null for a width it was never run on.
    /// </summary>
    public static string? ReferenceSha256(int vectorWidth) => vectorWidth switch
    {
        ShippedVectorWidth => ShippedSha256,
        512 => Sha256On512BitVectors,
        _ => null,
    };

    /// <summary>The resource (and file in src/Phi2Native/Embedded/) holding the shipped weights.</summary>
    internal const string ResourceName = "base.safetensors";

    /// <summary>
    /// The recipe: full-parameter AdamW on packed rows of Genesis's training chapters, with warmup and cosine decay,
    /// validated on Genesis's held-out chapters.
    /// </summary>
    public static EmbeddedTrainingSettings Settings { get; } = new()
    {
        BatchSize = 8, MaxLength = 128, LearningRate = 2e-3, WarmupSteps = 20, Steps = 700, WeightDecay = 0.1, MaxGradientNorm = 1.0, DataSeed = 42,
    };

    /// <summary>Steps between validations while the base trains.</summary>
    public const int EvaluateEvery = 100;

    /// <summary>
    /// Trains the base by the recipe on the CPU backend and writes its weights to <paramref name="path"/>
    /// (safetensors, F32, HF names; written to a temporary name and renamed); returns the file's SHA-256.
    /// </summary>
    /// <param name="path">The weights file to write; its folder must exist.</param>
    /// <param name="configure">Subscribes to the trainer's events (progress, losses).</param>
    /// <param name="run">Runs the trainer (default: <see cref="Trainer.Run"/>; e.g. a progress display).</param>
    public static string Make(string path, Action<Trainer>? configure = null, Func<Trainer, TrainingResult>? run = null) =>
        Make(Settings, path, configure, run);

    /// <summary>
    /// Trains by <paramref name="settings"/> (the bench's sweeps) and, with <paramref name="stopAfterSteps"/>, stops after
    /// that many steps of their schedule (the first steps of the real run, for a quick look at reproduction on a machine);
    /// otherwise as <see cref="Make(string, Action{Trainer}?, Func{Trainer, TrainingResult}?)"/>.
    /// </summary>
    internal static string Make(EmbeddedTrainingSettings settings, string path, Action<Trainer>? configure = null, Func<Trainer, TrainingResult>? run = null,
        int? stopAfterSteps = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(path);
        if (stopAfterSteps is <= 0) throw new ArgumentOutOfRangeException(nameof(stopAfterSteps), stopAfterSteps, "must be positive");
        if (stopAfterSteps is not null && run is not null) throw new ArgumentException("a stopped run is run by Trainer.Run with its cancellation; give no run", nameof(run));
        var tokenizer = EmbeddedDefault.Tokenizer();
        var (training, validation) = EmbeddedBook.Genesis.PackedRows(tokenizer, settings.MaxLength);
        using var model = EmbeddedDefault.CreateRandomModel(CpuBackend.Default);
        using var stop = new CancellationTokenSource();
        using (var trainingRun = new EmbeddedTraining(model, training, validation, settings, EvaluateEvery))
        {
            trainingRun.Train(trainer =>
            {
                // Cancelled once the step is done: the trainer stops there, with the schedule of the whole run.
                if (stopAfterSteps is int last) trainer.StepCompleted += m => { if (m.Step >= last) stop.Cancel(); };
                configure?.Invoke(trainer);
            }, trainer => run is null ? trainer.Run(stop.Token) : run(trainer));
            // Written before the training wrapper goes: disposing it gives the modules back their random weights.
            WriteWeights(model, path);
        }
        return Sha256(path);
    }

    /// <summary>Lower-case hex SHA-256 of a file's bytes.</summary>
    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>Lower-case hex SHA-256 of the shipped weights, as the assembly holds them.</summary>
    internal static string ResourceSha256()
    {
        using var stream = EmbeddedDefault.OpenResource(ResourceName);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>Writes the model's weights (F32) as one safetensors file at <paramref name="path"/>, through the checkpoint writer.</summary>
    private static void WriteWeights(Phi2Model model, string path)
    {
        string full = Path.GetFullPath(path);
        // The checkpoint writer writes a model folder; a scratch one beside the target keeps the final move on one file system.
        string staging = Path.Combine(Path.GetDirectoryName(full)!, $".phi2native-base-{Guid.NewGuid():N}");
        try
        {
            Phi2CheckpointWriter.Save(model, staging, DType.F32);
            File.Move(Path.Combine(staging, "model.safetensors"), full, overwrite: true);
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }
}
