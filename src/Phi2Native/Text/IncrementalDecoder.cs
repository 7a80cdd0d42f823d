namespace Phi2Native.Text;

/// <summary>
/// Turns generated ids into text as they come, giving each new piece once: a token can end inside a multi-byte UTF-8
/// character, so text is released only when it decodes cleanly. Ids with no token (padding rows) add nothing.
/// </summary>
public sealed class IncrementalDecoder(TextTokenizer tokenizer)
{
    private readonly List<int> _ids = new();
    private string _released = "";

    /// <summary>The text of everything appended that has not been given out yet, or "" while a character is incomplete.</summary>
    public string Append(int id)
    {
        if (tokenizer.TokenText(id) is null) return "";
        _ids.Add(id);
        string text = tokenizer.Decode(_ids);
        if (text.EndsWith('\uFFFD') || !text.StartsWith(_released, StringComparison.Ordinal)) return "";
        string piece = text[_released.Length..];
        _released = text;
        return piece;
    }

    /// <summary>Whatever is left (an incomplete character decodes as U+FFFD).</summary>
    public string Flush()
    {
        string text = tokenizer.Decode(_ids);
        string rest = text.StartsWith(_released, StringComparison.Ordinal) ? text[_released.Length..] : "";
        _released = text;
        return rest;
    }
}
