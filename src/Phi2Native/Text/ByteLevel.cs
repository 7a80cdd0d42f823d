using System.Text;

namespace Phi2Native.Text;

/// <summary>
/// GPT-2's byte-to-unicode mapping: byte-level BPE vocabularies spell every byte as one printable character, so a
/// token is a string whatever bytes it holds. Printable Latin-1 bytes stand for themselves ('!'..'~', '¡'..'¬',
/// '®'..'ÿ'); the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) become U+0100 upwards in byte order, so a
/// space (0x20) is 'Ġ' (U+0120), a tab 'ĉ' and a newline 'Ċ'.
/// </summary>
internal static class ByteLevel
{
    /// <summary>The character that stands for each byte.</summary>
    public static readonly char[] ByteToChar = BuildTable();

    private static readonly Dictionary<char, byte> s_charToByte =
        Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    /// <summary>
    /// The 256 characters in the order GPT-2's vocab.json numbers them (ids 0..255): the printable bytes first,
    /// then the remapped ones. Tests build hand-made vocabularies from it.
    /// </summary>
    public static IEnumerable<char> VocabularyOrder =>
        PrintableBytes().Concat(Enumerable.Range(0, 256).Where(b => !IsPrintable(b))).Select(b => ByteToChar[b]);

    /// <summary>Spells <paramref name="bytes"/> as a byte-level token.</summary>
    public static string ToPiece(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(ByteToChar[b]);
        return sb.ToString();
    }

    /// <summary>Appends the bytes a byte-level token stands for; false when a character is not byte-level.</summary>
    public static bool TryAppendBytes(string piece, List<byte> destination)
    {
        foreach (char c in piece)
        {
            if (!s_charToByte.TryGetValue(c, out byte b)) return false;
            destination.Add(b);
        }
        return true;
    }

    private static bool IsPrintable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;

    private static IEnumerable<int> PrintableBytes() => Enumerable.Range(0, 256).Where(IsPrintable);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++) table[b] = IsPrintable(b) ? (char)b : (char)next++;
        return table;
    }
}
