using System.Text.Json;
using Phi2Native.Models.Phi2;
using Phi2Native.Text;

namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// New words for a run that teaches new knowledge. Phi-2's embedding has 51200 rows but its tokenizer uses 50295, so new
/// tokens take the unused padded rows (50295..51199) without resizing anything; their rows train through the LoRA of
/// embed_tokens and lm_head. They are saved beside the adapter as HF's added_tokens.json and applied again on load.
/// </summary>
public static class NewTokens
{
    /// <summary>HF's file of added tokens (token -> id).</summary>
    public const string FileName = "added_tokens.json";

    /// <summary>Adds each token at the next unused row; returns token -> id.</summary>
    /// <exception cref="Phi2Exception">No unused rows are left, or a token is empty or already a single token.</exception>
    public static IReadOnlyDictionary<string, int> Add(TextTokenizer tokenizer, Phi2Config config, IEnumerable<string> tokens)
    {
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var token in tokens)
        {
            if (token.Length == 0) throw new Phi2Exception("--new-tokens: an empty token");
            if (tokenizer.AddedTokens.TryGetValue(token, out int existing)) { added[token] = existing; continue; }
            if (tokenizer.Encode(token) is [var single] && tokenizer.TokenText(single) == token)
                throw new Phi2Exception($"--new-tokens: \"{token}\" is already the single token {single}");
            int id = tokenizer.VocabularySize;
            if (id >= config.VocabSize)
                throw new Phi2Exception($"--new-tokens: no unused embedding rows left for \"{token}\" (vocab_size {config.VocabSize}, ids up to {id - 1} taken); Phi-2 has about 900");
            added[token] = tokenizer.AddToken(token, id);
        }
        return added;
    }

    /// <summary>Writes the tokenizer's added tokens to <paramref name="directory"/> (nothing when it has none).</summary>
    public static void Save(TextTokenizer tokenizer, string directory)
    {
        if (tokenizer.AddedTokens.Count == 0) return;
        string path = Path.Combine(directory, FileName), temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(tokenizer.AddedTokens.OrderBy(kv => kv.Value).ToDictionary(), FineTuningJson.Default.DictionaryStringInt32));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Adds the tokens an adapter folder saved to <paramref name="tokenizer"/>; returns how many.</summary>
    /// <exception cref="Phi2Exception">The file is malformed or clashes with the tokenizer.</exception>
    public static int Apply(TextTokenizer tokenizer, string adapterDirectory)
    {
        string path = Path.Combine(adapterDirectory, FileName);
        if (!File.Exists(path)) return 0;
        Dictionary<string, int> tokens;
        try
        {
            tokens = JsonSerializer.Deserialize(File.ReadAllText(path), FineTuningJson.Default.DictionaryStringInt32) ?? [];
        }
        catch (JsonException e)
        {
            throw new Phi2Exception($"{path}: expected an object of token -> id ({e.Message})", e);
        }
        foreach (var (token, id) in tokens) tokenizer.AddToken(token, id);
        return tokens.Count;
    }
}
