namespace Phi2Native.Text;

/// <summary>
/// Finds whole tokens (HF's "added tokens": &lt;|endoftext|&gt;, Phi-2's runs of spaces and tabs, tokens added for
/// fine-tuning) in a text, leftmost first and, among those starting at one place, longest first - the order HF's
/// added-vocabulary split uses, so a run of five spaces is one five-space token rather than a two and a three.
/// </summary>
internal sealed class WholeTokenMatcher
{
    // Candidates grouped by first character, longest first; a few dozen tokens make this faster than a regex.
    private readonly Dictionary<char, string[]> _byFirstChar;

    public WholeTokenMatcher(IEnumerable<string> tokens) =>
        _byFirstChar = tokens.Where(t => t.Length > 0).GroupBy(t => t[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Length).ToArray());

    /// <summary>Every match in <paramref name="text"/>, left to right, never overlapping.</summary>
    public IEnumerable<(int Start, string Token)> Matches(string text)
    {
        for (int i = 0; i < text.Length;)
        {
            string? token = LongestAt(text, i);
            if (token is null) { i++; continue; }
            yield return (i, token);
            i += token.Length;
        }
    }

    private string? LongestAt(string text, int index)
    {
        if (!_byFirstChar.TryGetValue(text[index], out var candidates)) return null;
        foreach (string token in candidates)
            if (text.AsSpan(index).StartsWith(token, StringComparison.Ordinal)) return token;
        return null;
    }
}
