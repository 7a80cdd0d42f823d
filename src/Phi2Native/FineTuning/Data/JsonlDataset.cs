using System.Text.Json;

namespace Phi2Native.FineTuning.Data;

/// <summary>How <see cref="JsonlDataset"/> reads a file.</summary>
public sealed record JsonlOptions
{
    /// <summary>
    /// An id appended after each example's tokens, with itself as label, so the model learns where an example
    /// ends (Phi-2: 50256, <c>&lt;|endoftext|&gt;</c>); null appends nothing.
    /// </summary>
    public int? EndOfTextId { get; init; }

    /// <summary>
    /// False (the default): the first malformed line stops the load with a <see cref="DataFormatException"/>.
    /// True: malformed lines are skipped, each reported through <see cref="Warn"/> and counted.
    /// </summary>
    public bool SkipMalformedLines { get; init; }

    /// <summary>Receives one message per skipped line (<c>file:line: what was wrong</c>) and a total at the end.</summary>
    public Action<string>? Warn { get; init; }
}

/// <summary>
/// A JSONL training file, tokenized: one JSON object per line, either <c>{"text": "..."}</c> (loss on every
/// token) or <c>{"prompt": "...", "completion": "..."}</c> (loss on the completion only), never both forms in
/// one file. Blank lines are skipped; other fields of an object are ignored.
/// </summary>
/// <remarks>
/// A prompt and its completion are encoded separately and concatenated, so the boundary between masked and
/// scored tokens falls exactly between them whatever the tokenizer merges; start a completion with the space
/// that separates it from the prompt (<c>"completion": " Paris"</c>), as OpenAI's format does.
/// Lines are parsed as UTF-8 bytes, so invalid UTF-8 is reported with its line rather than silently replaced.
/// </remarks>
public sealed class JsonlDataset
{
    private const string Expected = """expected {"text": "..."} or {"prompt": "...", "completion": "..."}""";
    private static readonly byte[] s_utf8Bom = [0xEF, 0xBB, 0xBF];

    private JsonlDataset(string source, JsonlFormat format, TokenizedExample[] examples, int[] skippedLines)
    {
        Source = source;
        Format = format;
        Examples = examples;
        SkippedLineNumbers = skippedLines;
    }

    /// <summary>The file read (as passed to <see cref="Load"/>) or the name given to <see cref="Read"/>.</summary>
    public string Source { get; }

    /// <summary>The form of the file's examples, fixed by its first well-formed line.</summary>
    public JsonlFormat Format { get; }

    /// <summary>The examples in file order.</summary>
    public IReadOnlyList<TokenizedExample> Examples { get; }

    /// <summary>1-based numbers of the malformed lines skipped (empty unless <see cref="JsonlOptions.SkipMalformedLines"/>).</summary>
    public IReadOnlyList<int> SkippedLineNumbers { get; }

    /// <summary>How many malformed lines were skipped.</summary>
    public int SkippedLines => SkippedLineNumbers.Count;

    /// <summary>Tokens over all examples, end-of-text ids included.</summary>
    public long TokenCount => Examples.Sum(e => (long)e.Length);

    /// <summary>Reads and tokenizes the JSONL file at <paramref name="path"/>.</summary>
    /// <param name="path">The file; messages name it as given.</param>
    /// <param name="encode">Text to token ids (any tokenizer; tests use a trivial one).</param>
    /// <param name="options">End-of-text id and error handling; null takes the defaults.</param>
    /// <exception cref="DataFormatException">
    /// The file is missing, a line is malformed (unless skipped), or no usable example is left.
    /// </exception>
    public static JsonlDataset Load(string path, Func<string, int[]> encode, JsonlOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Phi2Native.IO.PathChecks.FileProblem(path) is { } problem) throw new DataFormatException(path, null, $"the JSONL file {problem}");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        return Read(stream, path, encode, options);
    }

    /// <summary>Reads and tokenizes JSONL from <paramref name="stream"/>; <paramref name="source"/> names it in messages.</summary>
    /// <exception cref="DataFormatException">A line is malformed (unless skipped), or no usable example is left.</exception>
    public static JsonlDataset Read(Stream stream, string source, Func<string, int[]> encode, JsonlOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(encode);
        options ??= new JsonlOptions();
        if (options.EndOfTextId is < 0) throw new ArgumentOutOfRangeException(nameof(options), $"EndOfTextId {options.EndOfTextId} is negative");

        var examples = new List<TokenizedExample>();
        var skipped = new List<int>();
        JsonlFormat? format = null;
        int formatLine = 0, lines = 0, blank = 0;
        foreach (var (lineNumber, line) in SplitLines(stream))
        {
            lines = lineNumber;
            if (IsBlank(line)) { blank++; continue; }
            string? error = TryParse(line, out var lineFormat, out string first, out string? second);
            if (error is null && format is JsonlFormat fileFormat && lineFormat != fileFormat)
                error = $"a {Describe(lineFormat)} example, but line {formatLine} made this a {Describe(fileFormat)} file; one file holds one form";
            TokenizedExample? example = null;
            if (error is null) error = TryEncode(encode, lineFormat, first, second, options.EndOfTextId, lineNumber, out example);
            if (error is not null)
            {
                if (!options.SkipMalformedLines) throw new DataFormatException(source, lineNumber, error);
                skipped.Add(lineNumber);
                options.Warn?.Invoke($"{source}:{lineNumber}: {error} (line skipped)");
                continue;
            }
            if (format is null) (format, formatLine) = (lineFormat, lineNumber);
            examples.Add(example!);
        }

        if (skipped.Count > 0)
            options.Warn?.Invoke($"{source}: skipped {skipped.Count} malformed line{(skipped.Count == 1 ? "" : "s")}");
        if (examples.Count == 0)
            throw new DataFormatException(source, null,
                $"no usable examples ({lines} lines: {blank} blank, {skipped.Count} malformed and skipped); {Expected}, one per line");
        return new JsonlDataset(source, format!.Value, [.. examples], [.. skipped]);
    }

    /// <summary>Checks one line's shape; on success returns null and the text (or prompt and completion).</summary>
    private static string? TryParse(ReadOnlyMemory<byte> line, out JsonlFormat format, out string first, out string? second)
    {
        (format, first, second) = (JsonlFormat.Text, "", null);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            // The reader's message ends with its own 0-based position; give the 1-based column instead.
            string reason = e.Message;
            int cut = reason.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (cut >= 0) reason = reason[..cut];
            return $"not valid JSON at column {(e.BytePositionInLine ?? 0) + 1} ({reason.TrimEnd('.')}); {Expected}";
        }

        using (document)
        {
            try
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object) return $"a JSON {KindName(root.ValueKind)}, not an object; {Expected}";
                JsonElement? text = null, prompt = null, completion = null;
                foreach (var property in root.EnumerateObject())
                {
                    ref JsonElement? slot = ref text;
                    if (property.NameEquals("text")) slot = ref text;
                    else if (property.NameEquals("prompt")) slot = ref prompt;
                    else if (property.NameEquals("completion")) slot = ref completion;
                    else continue;
                    // JSON allows a repeated key and keeps the last; a repeated field here is far likelier a mistake.
                    if (slot is not null) return $"\"{property.Name}\" appears twice; {Expected}";
                    slot = property.Value;
                }

                if (text is JsonElement textValue)
                {
                    if (prompt is not null || completion is not null)
                        return $"has both \"text\" and \"{(prompt is not null ? "prompt" : "completion")}\"; {Expected}";
                    return StringField(textValue, "text", out first);
                }
                if (prompt is null && completion is null) return $"no \"text\" field and no \"prompt\" and \"completion\" fields; {Expected}";
                if (prompt is null) return $"\"completion\" without \"prompt\"; {Expected}";
                if (completion is null) return $"\"prompt\" without \"completion\"; {Expected}";
                format = JsonlFormat.PromptCompletion;
                return StringField(prompt.Value, "prompt", out first) ?? StringField(completion.Value, "completion", out second);
            }
            catch (InvalidOperationException)
            {
                // JsonDocument checks structure while parsing; strings are only transcoded when read, which
                // is where invalid UTF-8 surfaces.
                return "not valid UTF-8";
            }
        }
    }

    private static string? StringField(JsonElement value, string name, out string text)
    {
        text = "";
        if (value.ValueKind != JsonValueKind.String) return $"\"{name}\" is {KindName(value.ValueKind, article: true)}, expected a string";
        text = value.GetString()!;
        return null;
    }

    /// <summary>Tokenizes a well-formed line; labels mask the prompt and keep everything else.</summary>
    private static string? TryEncode(Func<string, int[]> encode, JsonlFormat format, string first, string? second,
        int? endOfText, int lineNumber, out TokenizedExample? example)
    {
        example = null;
        int[] head = Encode(encode, first), tail = second is null ? [] : Encode(encode, second);
        // The text or the completion carries the loss; with nothing in it the example teaches nothing.
        if (format == JsonlFormat.Text && head.Length == 0) return "\"text\" encodes to no tokens, expected a non-empty string";
        if (format == JsonlFormat.PromptCompletion && tail.Length == 0) return "\"completion\" encodes to no tokens, expected a non-empty string";

        // ids = [head | tail | eot]; labels = ids, with the prompt (head, in prompt/completion form) masked.
        int length = head.Length + tail.Length + (endOfText is null ? 0 : 1);
        var ids = new int[length];
        head.CopyTo(ids, 0);
        tail.CopyTo(ids, head.Length);
        if (endOfText is int eot) ids[^1] = eot;
        var labels = (int[])ids.Clone();
        if (format == JsonlFormat.PromptCompletion) labels.AsSpan(0, head.Length).Fill(TokenizedExample.IgnoreLabel);
        example = new TokenizedExample(ids, labels, lineNumber);
        return null;
    }

    private static int[] Encode(Func<string, int[]> encode, string text) =>
        encode(text) ?? throw new InvalidOperationException("the encoder returned null");

    private static string Describe(JsonlFormat format) => format == JsonlFormat.Text ? "text" : "prompt/completion";

    private static string KindName(JsonValueKind kind, bool article = false) => kind switch
    {
        JsonValueKind.Object => article ? "an object" : "object",
        JsonValueKind.Array => article ? "an array" : "array",
        JsonValueKind.String => article ? "a string" : "string",
        JsonValueKind.Number => article ? "a number" : "number",
        JsonValueKind.True or JsonValueKind.False => article ? "a boolean" : "boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    private static bool IsBlank(ReadOnlyMemory<byte> line)
    {
        foreach (byte b in line.Span)
            if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r')) return false;
        return true;
    }

    private static byte[] TrimLine(ReadOnlySpan<byte> line, bool first)
    {
        if (line.Length > 0 && line[^1] == (byte)'\r') line = line[..^1];
        if (first && line.StartsWith(s_utf8Bom)) line = line[s_utf8Bom.Length..];
        return line.ToArray();
    }

    /// <summary>Splits UTF-8 bytes at '\n' (a '\r' before it is dropped); yields (1-based line number, line bytes).</summary>
    /// <remarks>Each yielded line is a fresh array, safe to keep; a UTF-8 byte-order mark opening the stream is dropped.</remarks>
    private static IEnumerable<(int LineNumber, ReadOnlyMemory<byte> Line)> SplitLines(Stream stream)
    {
        byte[] buffer = new byte[1 << 16];
        int start = 0, end = 0, lineNumber = 0;
        bool endOfStream = false, first = true;
        while (true)
        {
            int newline = buffer.AsSpan(start, end - start).IndexOf((byte)'\n');
            if (newline >= 0 || (endOfStream && end > start))
            {
                int length = newline >= 0 ? newline : end - start;
                byte[] line = TrimLine(buffer.AsSpan(start, length), first);
                first = false;
                start += newline >= 0 ? length + 1 : length;
                yield return (++lineNumber, line);
                continue;
            }
            if (endOfStream) yield break;

            // No whole line left in the buffer: move the partial line to the front, grow if it fills the buffer.
            if (start > 0)
            {
                Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                (end, start) = (end - start, 0);
            }
            if (end == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2);
            int read = stream.Read(buffer, end, buffer.Length - end);
            if (read == 0) endOfStream = true;
            else end += read;
        }
    }
}
