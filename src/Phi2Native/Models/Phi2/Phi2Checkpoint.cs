using System.Text.Json;
using System.Text.Json.Nodes;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// Loads a Phi-2 model from an HF-layout folder: config.json plus model.safetensors, or the shards named by
/// model.safetensors.index.json; F32, F16 or BF16 weights; HF or legacy phi-msft names. No tokenizer files needed.
/// </summary>
public static class Phi2Checkpoint
{
    private const string IndexFile = "model.safetensors.index.json";
    private const string SingleFile = "model.safetensors";

    /// <summary>Tensors named per kind of mismatch in a load error; the rest are counted.</summary>
    private const int MaxListedPerSection = 10;

    /// <summary>Loads the model onto <paramref name="backend"/>, converting weights to <paramref name="dtype"/>.</summary>
    /// <param name="directory">The model folder.</param>
    /// <param name="backend">Where the weights go.</param>
    /// <param name="dtype">Compute dtype of the weights (F32 on the CPU; F64 for gradient checks).</param>
    /// <param name="warn">Receives non-fatal remarks (e.g. bos/eos outside a tiny vocabulary).</param>
    /// <param name="progress">Receives the fraction of parameters loaded, from 0 to 1 (a real Phi-2 takes a while).</param>
    /// <exception cref="CheckpointException">The folder or weight files are missing, or tensors are missing, unexpected or mis-shaped (all listed).</exception>
    /// <exception cref="ModelConfigException">config.json is missing, malformed or unsupported.</exception>
    /// <exception cref="SafeTensorsFormatException">A weight file is truncated or corrupt.</exception>
    public static Phi2Model Load(string directory, IBackend backend, DType dtype = DType.F32, Action<string>? warn = null, IProgress<double>? progress = null)
    {
        if (PathChecks.FolderProblem(directory) is { } problem)
            throw new CheckpointException($"model folder '{directory}' {problem}; pass a folder holding config.json and model.safetensors");
        var config = Phi2Config.Load(Path.Combine(directory, "config.json"), warn);
        var files = OpenWeightFiles(directory);
        try
        {
            var sources = CollectSources(files, config);
            int loaded = 0;
            progress?.Report(0);
            var model = new Phi2Model(config, backend, (name, shape) =>
            {
                var tensor = sources[name].Load(backend, dtype);
                progress?.Report((double)++loaded / sources.Count);
                return tensor;
            });
            model.CheckpointDType = sources.Values.GroupBy(s => s.Info.DType!.Value).MaxBy(g => g.Count())!.Key;
            return model;
        }
        finally
        {
            foreach (var file in files) file.Dispose();
        }
    }

    /// <summary>Where one HF parameter's bytes are: a tensor of a file, or a row range of one (phi-msft Wqkv).</summary>
    private sealed record Source(SafeTensorsFile File, SafeTensorInfo Info, int RowStart, int RowCount, int[] Shape)
    {
        public Tensor Load(IBackend backend, DType dtype)
        {
            var bytes = File.GetBytes(Info.Name);
            if (RowCount >= 0)
            {
                long rowBytes = Info.ByteLength / Math.Max(Info.Shape[0], 1);
                bytes = bytes.Slice((int)(RowStart * rowBytes), (int)(RowCount * rowBytes));
            }
            return backend.FromBytes(bytes, Info.DType!.Value, Shape, dtype);
        }
    }

    private static List<SafeTensorsFile> OpenWeightFiles(string directory)
    {
        string indexPath = Path.Combine(directory, IndexFile), singlePath = Path.Combine(directory, SingleFile);
        var fileNames = new List<string>();
        if (File.Exists(indexPath)) fileNames.AddRange(ReadShardNames(indexPath));
        else if (File.Exists(singlePath)) fileNames.Add(SingleFile);
        else
        {
            string hint = File.Exists(Path.Combine(directory, "pytorch_model.bin")) || Directory.EnumerateFiles(directory, "pytorch_model*.bin").Any()
                ? " (only PyTorch .bin weights are there: convert them to safetensors)" : "";
            throw new CheckpointException($"model folder '{directory}' has neither {SingleFile} nor {IndexFile}{hint}");
        }
        var files = new List<SafeTensorsFile>();
        try
        {
            foreach (var name in fileNames)
            {
                string path = Path.Combine(directory, name);
                if (!File.Exists(path)) throw new CheckpointException($"{indexPath}: shard '{name}' named in weight_map does not exist");
                files.Add(SafeTensorsFile.Open(path));
            }
            if (File.Exists(indexPath)) CheckIndex(indexPath, files);
        }
        catch
        {
            foreach (var file in files) file.Dispose();
            throw;
        }
        return files;
    }

    private static JsonObject ReadWeightMap(string indexPath)
    {
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(indexPath)) as JsonObject;
            return root?["weight_map"] as JsonObject ?? throw new CheckpointException($"{indexPath}: expected an object with a \"weight_map\" object");
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{indexPath}: not valid JSON ({e.Message})", e);
        }
    }

    private static IEnumerable<string> ReadShardNames(string indexPath)
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (tensor, file) in ReadWeightMap(indexPath))
        {
            if (file?.GetValueKind() != JsonValueKind.String) throw new CheckpointException($"{indexPath}: weight_map[\"{tensor}\"] must be a file name");
            string name = file.GetValue<string>();
            if (Path.GetFileName(name) != name) throw new CheckpointException($"{indexPath}: weight_map[\"{tensor}\"] = \"{name}\" must be a file in the model folder");
            names.Add(name);
        }
        return names;
    }

    private static void CheckIndex(string indexPath, List<SafeTensorsFile> files)
    {
        var byName = files.ToDictionary(f => Path.GetFileName(f.FilePath));
        var problems = new List<string>();
        foreach (var (tensor, file) in ReadWeightMap(indexPath))
            if (!byName[file!.GetValue<string>()].Contains(tensor)) problems.Add($"  {tensor}: listed in weight_map under {file} but not in that file");
        if (problems.Count > 0) throw new CheckpointException($"{indexPath} does not match its shards:\n{string.Join("\n", problems)}");
    }

    private static Dictionary<string, Source> CollectSources(List<SafeTensorsFile> files, Phi2Config config)
    {
        var expected = Phi2Model.ParameterShapes(config).ToDictionary(p => p.Name, p => p.Shape);
        var sources = new Dictionary<string, Source>(StringComparer.Ordinal);
        var seenIn = new Dictionary<string, string>(StringComparer.Ordinal);
        List<string> unexpected = new(), misshaped = new(), duplicates = new();
        var reportedAsMisshaped = new HashSet<string>(StringComparer.Ordinal);
        int c = config.HiddenSize;
        foreach (var file in files)
            foreach (var info in file.Tensors)
            {
                if (seenIn.TryGetValue(info.Name, out var other)) { duplicates.Add($"  {info.Name}: in both {other} and {file.FilePath}"); continue; }
                seenIn[info.Name] = file.FilePath;
                // Older HF exports carry the rotary frequencies as a buffer; they are recomputed from the config.
                if (info.Name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal)) continue;
                IReadOnlyList<PhiMsftNames.Part> parts = config.IsPhiMsft
                    ? PhiMsftNames.Map(info.Name, c)
                    : expected.ContainsKey(info.Name) ? [new PhiMsftNames.Part(info.Name, 0, -1)] : [];
                if (parts.Count == 0 || parts.Any(p => !expected.ContainsKey(p.HfName))) { unexpected.Add($"  {info.Name} {info.ShapeText}"); continue; }
                if (info.DType is not { } dtype || !dtype.IsFloatingPoint())
                {
                    misshaped.Add($"  {info.Name}: dtype {info.DTypeName} is not a floating-point type (expected F32, F16 or BF16)");
                    reportedAsMisshaped.UnionWith(parts.Select(p => p.HfName));
                    continue;
                }
                // A fused tensor must have exactly the rows of its parts; checked on the file's own name.
                int[] fileShape = Array.ConvertAll(info.Shape, d => (int)d);
                int[] wanted = parts.Count == 1 ? expected[parts[0].HfName]
                    : [3 * c, .. expected[parts[0].HfName].Skip(1)];
                if (!fileShape.SequenceEqual(wanted))
                {
                    misshaped.Add($"  {info.Name}: expected [{string.Join(", ", wanted)}], got {info.ShapeText}");
                    reportedAsMisshaped.UnionWith(parts.Select(p => p.HfName));
                    continue;
                }
                foreach (var part in parts)
                    sources[part.HfName] = new Source(file, info, part.RowStart, part.RowCount, expected[part.HfName]);
            }
        var missing = expected.Keys.Where(name => !sources.ContainsKey(name) && !reportedAsMisshaped.Contains(name))
            .Select(name => $"  {name} [{string.Join(", ", expected[name])}]").ToList();
        if (missing.Count + unexpected.Count + misshaped.Count + duplicates.Count == 0) return sources;
        var message = new System.Text.StringBuilder($"the checkpoint does not match a {(config.IsPhiMsft ? "phi-msft" : "Phi-2")} model of its config.json:");
        // Bounded: a config far from its weights (num_hidden_layers 1000 over 32 layers) is a count and a few names, not pages.
        void Section(string title, List<string> lines)
        {
            if (lines.Count == 0) return;
            message.Append($"\n{title} ({lines.Count}):\n{string.Join("\n", lines.Take(MaxListedPerSection))}");
            if (lines.Count > MaxListedPerSection) message.Append($"\n  ... and {lines.Count - MaxListedPerSection} more");
        }
        Section("missing tensors", missing);
        Section("unexpected tensors", unexpected);
        Section("mis-shaped tensors", misshaped);
        Section("tensors stored twice", duplicates);
        throw new CheckpointException(message.ToString());
    }
}
