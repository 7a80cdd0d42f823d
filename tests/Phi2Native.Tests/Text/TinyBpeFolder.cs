using System.Text.Json;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>
/// A hand-made byte-level BPE tokenizer folder, small enough to work encodings out by hand.
/// </summary>
/// <remarks>
/// Ids 0..255 are the single bytes in GPT-2's order, so they equal GPT-2's own ids: '!'..'~' are 0..93 (a = 64,
/// b = 65, c = 66, d = 67, e = 68, f = 69, h = 71, l = 75, o = 78, r = 81, t = 83, w = 86, x = 87), the bytes
/// 0xA1..0xAC and 0xAE..0xFF follow (0xA5 = 98, 0xE6 = 162), then the remapped bytes 0x00..0x20 as 188..220
/// (tab 'ĉ' = 197, newline 'Ċ' = 198, space 'Ġ' = 220), 0x7F..0xA0 as 221..254 (0x97 'Ĺ' = 245) and 0xAD as 255.
/// The merges, in rank order, make ids 256.. in the same order:
/// <code>
///  rank  merge       token    id
///   1    Ġ t         Ġt       256   (GPT-2's first merge too)
///   2    h e         he       257
///   3    l l         ll       258
///   4    Ġt he       Ġthe     259
///   5    he ll       hell     260
///   6    hell o      hello    261
///   7    l o         lo       262   (ranked after "l l", so "llo" is ll|o, not l|lo)
///   8    Ġ w         Ġw       263
///   9    o r         or       264
///  10    Ġw or       Ġwor     265
///  11    l d         ld       266
///  12    Ġwor ld     Ġworld   267
///  13    Ã ©         Ã©       268   ("é" is UTF-8 C3 A9, spelled "Ã©")
/// </code>
/// &lt;|endoftext|&gt; is 269. The added tokens (added_tokens.json, as Phi-2's folder has them) are two spaces
/// = 270, four spaces = 271 and two tabs = 272.
/// </remarks>
internal static class TinyBpeFolder
{
    public const int EndOfText = 269, TwoSpaces = 270, FourSpaces = 271, TwoTabs = 272;

    public static readonly string[] Merges =
    [
        "Ġ t", "h e", "l l", "Ġt he", "he ll", "hell o", "l o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ã ©",
    ];

    public static readonly Dictionary<string, int> AddedTokens = new()
    {
        ["  "] = TwoSpaces, ["    "] = FourSpaces, ["\t\t"] = TwoTabs,
    };

    /// <summary>The vocabulary: 256 bytes, one token per merge, &lt;|endoftext|&gt; at <paramref name="endOfTextId"/>.</summary>
    public static Dictionary<string, int> Vocabulary(int endOfTextId = EndOfText)
    {
        var vocabulary = new Dictionary<string, int>();
        foreach (char c in ByteLevel.VocabularyOrder) vocabulary[c.ToString()] = vocabulary.Count;
        foreach (string merge in Merges) vocabulary[merge.Replace(" ", "")] = vocabulary.Count;
        vocabulary["<|endoftext|>"] = endOfTextId;
        return vocabulary;
    }

    /// <summary>Writes the folder: vocab.json, merges.txt (with GPT-2's "#version" header) and, unless null, added_tokens.json.</summary>
    public static string Write(string directory, Dictionary<string, int>? addedTokens = null, int endOfTextId = EndOfText,
        bool withAddedTokens = true)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "vocab.json"), JsonSerializer.Serialize(Vocabulary(endOfTextId)));
        File.WriteAllLines(Path.Combine(directory, "merges.txt"), ["#version: 0.2", .. Merges]);
        if (withAddedTokens)
            File.WriteAllText(Path.Combine(directory, "added_tokens.json"), JsonSerializer.Serialize(addedTokens ?? AddedTokens));
        return directory;
    }
}
