using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// Writes a model as an HF-layout checkpoint folder (config.json + model.safetensors with HF names) that HF
/// transformers and this engine's loader read, e.g. after merging an adapter.
/// </summary>
public static class Phi2CheckpointWriter
{
    private static readonly HashSet<string> NotCopied = new(StringComparer.Ordinal)
    {
        "config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
    };

    /// <summary>The weight indexes HF writes for sharded checkpoints; each names its shards in "weight_map".</summary>
    private static readonly string[] WeightIndexes = ["model.safetensors.index.json", "pytorch_model.bin.index.json"];

    /// <summary>The other files that make up a model folder: unsharded weights, its config, and its tokenizer.</summary>
    private static readonly string[] ModelFileNames =
    [
        "model.safetensors", "pytorch_model.bin", "config.json", "generation_config.json",
        "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    ];

    /// <summary>
    /// The files of <paramref name="directory"/> that make up a model checkpoint, those <see cref="Save"/> replaces: the
    /// weight indexes (model.safetensors.index.json, pytorch_model.bin.index.json) first, then the shards their
    /// weight_map names (plain file names in the folder only), model.safetensors, pytorch_model.bin, config.json,
    /// generation_config.json and the tokenizer files (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
    /// special_tokens_map.json, added_tokens.json). Only files that exist are listed; nothing else in the folder, and
    /// no subfolder, is ever part of it.
    /// </summary>
    /// <exception cref="CheckpointException">An index is not valid JSON, so the shards it names cannot be told.</exception>
    public static IReadOnlyList<string> ModelFiles(string directory)
    {
        var files = new List<string>();
        void Add(string name)
        {
            string path = Path.Combine(directory, name);
            if (File.Exists(path) && !files.Contains(path)) files.Add(path);
        }
        foreach (var index in WeightIndexes)
        {
            string indexPath = Path.Combine(directory, index);
            if (!File.Exists(indexPath)) continue;
            Add(index);
            foreach (var shard in ShardNames(indexPath)) Add(shard);
        }
        foreach (var name in ModelFileNames) Add(name);
        return files;
    }

    private static IEnumerable<string> ShardNames(string indexPath)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(indexPath));
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{indexPath}: not valid JSON ({e.Message}), so the shards it names cannot be told; remove the old weights yourself", e);
        }
        if (root is not JsonObject { } index || index["weight_map"] is not JsonObject map) return [];
        // A name with a folder in it is not a shard of this folder: never touched.
        return map.Select(entry => entry.Value is JsonValue value && value.TryGetValue(out string? name) ? name : null)
            .OfType<string>().Where(name => name.Length > 0 && Path.GetFileName(name) == name).Distinct();
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="directory"/> with weights stored as <paramref name="dtype"/>
    /// (F32, F16 or BF16). config.json is the source's (HF keys kept, torch_dtype updated), or written in HF keys when
    /// the source was phi-msft; every other file of <paramref name="sourceDirectory"/> (tokenizer files, generation
    /// config) is copied. A model already in the folder is replaced: its <see cref="ModelFiles"/> are removed first
    /// (the index before its shards), so the folder never loads the old weights or tokenizer; other files stay. Each
    /// new file is written to a temporary name and renamed.
    /// </summary>
    /// <exception cref="CheckpointException">An index already in the folder is not valid JSON (nothing is removed or written).</exception>
    public static void Save(Phi2Model model, string directory, DType dtype, string? sourceDirectory = null)
    {
        if (dtype is not (DType.F32 or DType.F16 or DType.BF16))
            throw new Phi2Exception($"--dtype {dtype} is not a checkpoint dtype; use f32, f16 or bf16");
        Directory.CreateDirectory(directory);
        foreach (var file in ModelFiles(directory)) File.Delete(file);
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var parameter in model.Parameters())
        {
            // One tensor at a time: a 5 GB export never holds more than one parameter in host memory twice.
            var source = parameter;
            writer.AddStreamed(parameter.Name!, dtype, Array.ConvertAll(parameter.Shape.ToArray(), d => (long)d), stream =>
            {
                using var converted = source.Backend.Cast(source, dtype);
                var bytes = new byte[converted.ElementCount * dtype.SizeInBytes()];
                converted.Backend.CopyToHost(converted, bytes);
                stream.Write(bytes);
            });
        }
        writer.Save(Path.Combine(directory, "model.safetensors"));
        WriteConfig(model.Config, directory, dtype, sourceDirectory);
        if (sourceDirectory is null) return;
        foreach (var file in Directory.EnumerateFiles(sourceDirectory))
        {
            string name = Path.GetFileName(file);
            if (NotCopied.Contains(name) || name.EndsWith(".safetensors", StringComparison.Ordinal) || name.EndsWith(".bin", StringComparison.Ordinal)) continue;
            File.Copy(file, Path.Combine(directory, name), overwrite: true);
        }
    }

    private static void WriteConfig(Phi2Config config, string directory, DType dtype, string? sourceDirectory)
    {
        string torchDtype = dtype switch { DType.F16 => "float16", DType.BF16 => "bfloat16", _ => "float32" };
        string? sourceConfig = sourceDirectory is null ? null : Path.Combine(sourceDirectory, "config.json");
        JsonObject root;
        if (sourceConfig is not null && File.Exists(sourceConfig) && !config.IsPhiMsft)
            root = JsonNode.Parse(File.ReadAllText(sourceConfig)) as JsonObject ?? throw new ModelConfigException($"{sourceConfig}: expected a JSON object");
        else
        {
            // The HF keys this engine reads, from the config it ran with (a phi-msft source is converted).
            root = new JsonObject
            {
                ["architectures"] = new JsonArray("PhiForCausalLM"), ["model_type"] = "phi",
                ["vocab_size"] = config.VocabSize, ["hidden_size"] = config.HiddenSize, ["intermediate_size"] = config.IntermediateSize,
                ["num_hidden_layers"] = config.NumHiddenLayers, ["num_attention_heads"] = config.NumAttentionHeads,
                ["num_key_value_heads"] = config.NumAttentionHeads, ["max_position_embeddings"] = config.MaxPositionEmbeddings,
                ["partial_rotary_factor"] = (double)config.RotaryDim / config.HeadDim, ["rope_theta"] = config.RopeTheta,
                ["layer_norm_eps"] = config.LayerNormEps, ["hidden_act"] = "gelu_new", ["resid_pdrop"] = config.ResidPdrop,
                ["embd_pdrop"] = config.EmbdPdrop, ["attention_dropout"] = config.AttentionDropout, ["qk_layernorm"] = false,
                ["tie_word_embeddings"] = false, ["bos_token_id"] = config.BosTokenId, ["eos_token_id"] = config.EosTokenId,
            };
        }
        root["torch_dtype"] = torchDtype;
        string path = Path.Combine(directory, "config.json"), temporary = path + ".tmp";
        File.WriteAllText(temporary, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.Move(temporary, path, overwrite: true);
    }
}
