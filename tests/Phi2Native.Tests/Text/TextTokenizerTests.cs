using NUnit.Framework;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>
/// Encoding and decoding with the hand-made vocabulary of <see cref="TinyBpeFolder"/>; every expected id list is
/// worked out by hand in the comments (merges applied lowest rank first; ids as listed there).
/// </summary>
[TestFixture]
public class TextTokenizerTests
{
    private string _temp = null!;
    private TextTokenizer _tokenizer = null!;

    [SetUp]
    public void SetUp()
    {
        _temp = Fixtures.TemporaryDirectory();
        _tokenizer = TextTokenizer.FromModelFolder(TinyBpeFolder.Write(Path.Combine(_temp, "model")));
    }

    [TearDown] public void TearDown() => Directory.Delete(_temp, recursive: true);

    [Test]
    public void MergesApplyInRankOrder()
    {
        // "hello": h e l l o; pairs h-e (2), l-l (3), l-o (7) -> he l l o; then l-l (3) -> he ll o;
        // then he-ll (5) -> hell o; then hell-o (6) -> hello = 261.
        // " world": Ġ w o r l d; Ġ-w (8) -> Ġw o r l d; o-r (9) -> Ġw or l d; Ġw-or (10) -> Ġwor l d;
        // l-d (11) -> Ġwor ld; Ġwor-ld (12) -> Ġworld = 267.
        Assert.That(_tokenizer.Encode("hello world"), Is.EqualTo(new[] { 261, 267 }));
        // "llo": l-l (3) beats l-o (7) -> ll o, and "ll o" is no merge: ll = 258, o = 78.
        Assert.That(_tokenizer.Encode("llo"), Is.EqualTo(new[] { 258, 78 }));
        // "the the" splits into "the" and " the". "the": h-e (2) -> t he, no merge "t he": t = 83, he = 257.
        // " the": Ġ-t (1) -> Ġt h e; h-e (2) -> Ġt he; Ġt-he (4) -> Ġthe = 259.
        Assert.That(_tokenizer.Encode("the the"), Is.EqualTo(new[] { 83, 257, 259 }));
    }

    [Test]
    public void RunsOfSpacesAndTabsAreWholeTokensLongestFirst()
    {
        // Two spaces are token 270; what follows is encoded on its own, so "world" has no Ġ:
        // w o r l d -> o-r (9) -> w or l d -> l-d (11) -> w or ld = 86 264 266.
        Assert.That(_tokenizer.Encode("hello  world"), Is.EqualTo(new[] { 261, 270, 86, 264, 266 }));
        // Three spaces: two-space token, then " b" = Ġ b (no merge) = 220 65.
        Assert.That(_tokenizer.Encode("a   b"), Is.EqualTo(new[] { 64, 270, 220, 65 }));
        // Four spaces are one token (271), not two two-space ones.
        Assert.That(_tokenizer.Encode("a    b"), Is.EqualTo(new[] { 64, 271, 65 }));
        // Six spaces: the longest match first (four, 271), then two (270).
        Assert.That(_tokenizer.Encode("a      b"), Is.EqualTo(new[] { 64, 271, 270, 65 }));
        // Three tabs: two-tab token 272, then "\tx" splits into a tab (197) and x (87).
        Assert.That(_tokenizer.Encode("\t\t\tx"), Is.EqualTo(new[] { 272, 197, 87 }));
        Assert.That(_tokenizer.Decode(_tokenizer.Encode("a      b\t\t\tx")), Is.EqualTo("a      b\t\t\tx"));
    }

    [Test]
    public void NonAsciiTextRoundTripsThroughUtf8Bytes()
    {
        // "café": c a f Ã © (é is C3 A9); Ã-© (13) -> c a f Ã© = 66 64 69 268.
        // " 日": Ġ and the three bytes E6 97 A5 (æ Ĺ ¥), no merges = 220 162 245 98.
        int[] ids = _tokenizer.Encode("café 日");
        Assert.That(ids, Is.EqualTo(new[] { 66, 64, 69, 268, 220, 162, 245, 98 }));
        Assert.That(_tokenizer.Decode(ids), Is.EqualTo("café 日"));
        const string text = "naïve — Ünïcödé 日本語 😀\r\n\tend";
        Assert.That(_tokenizer.Decode(_tokenizer.Encode(text)), Is.EqualTo(text));
        // A lone byte of a multi-byte character is not UTF-8 on its own.
        Assert.That(_tokenizer.Decode([162]), Is.EqualTo("\uFFFD"));
    }

    [Test]
    public void EndOfTextIsOneToken()
    {
        Assert.That(_tokenizer.EndOfTextId, Is.EqualTo(TinyBpeFolder.EndOfText));
        // hello = 261, <|endoftext|> = 269, "the" = t he = 83 257 (encoded on its own, no Ġ).
        Assert.That(_tokenizer.Encode("hello<|endoftext|>the"), Is.EqualTo(new[] { 261, 269, 83, 257 }));
        Assert.That(_tokenizer.Decode([269]), Is.EqualTo("<|endoftext|>"));
    }

    [Test]
    public void NothingIsAddedAroundTheText()
    {
        Assert.That(_tokenizer.Encode(""), Is.Empty);
        Assert.That(_tokenizer.Encode("a"), Is.EqualTo(new[] { 64 }));
        Assert.That(_tokenizer.Decode([]), Is.EqualTo(""));
    }

    [Test]
    public void PiecesUseTheVocabularySpelling()
    {
        Assert.That(_tokenizer.EncodeWithPieces("hello world"), Is.EqualTo(new[] { (261, "hello"), (267, "Ġworld") }));
        Assert.That(_tokenizer.TokenText(198), Is.EqualTo("Ċ"));
        Assert.That(_tokenizer.TokenText(TinyBpeFolder.TwoSpaces), Is.EqualTo("  "));
        Assert.That(_tokenizer.TokenText(5000), Is.Null);
        Assert.That(_tokenizer.VocabularySize, Is.EqualTo(273));
        Assert.That(_tokenizer.Source, Does.Contain("Phi2Tokenizer").And.Contain(_temp));
    }

    [Test]
    public void UnknownIdsDoNotDecode()
    {
        var e = Assert.Throws<TokenizerException>(() => _tokenizer.Decode([261, 5000]));
        Assert.That(e!.Message, Does.Contain("5000"));
    }

    [Test]
    public void AddedTokensEncodeWholeAndDecodeBack()
    {
        Assert.That(_tokenizer.AddToken("phi2native", 300), Is.EqualTo(300));
        // "a " then the token then " b": "a " splits into a (64) and a lone trailing space Ġ (220), as HF's
        // added-token split leaves it; " b" = Ġ b = 220 65.
        int[] ids = _tokenizer.Encode("a phi2native b");
        Assert.That(ids, Is.EqualTo(new[] { 64, 220, 300, 220, 65 }));
        Assert.That(_tokenizer.Decode(ids), Is.EqualTo("a phi2native b"));
        Assert.That(_tokenizer.Encode("phi2nativephi2native"), Is.EqualTo(new[] { 300, 300 }));
        Assert.That(_tokenizer.TokenText(300), Is.EqualTo("phi2native"));
        Assert.That(_tokenizer.AddedTokens, Is.EqualTo(new Dictionary<string, int> { ["phi2native"] = 300 }));
        Assert.That(_tokenizer.VocabularySize, Is.EqualTo(301));
        // Adding it again with the same id changes nothing.
        Assert.That(_tokenizer.AddToken("phi2native", 300), Is.EqualTo(300));
        Assert.That(_tokenizer.AddedTokens, Has.Count.EqualTo(1));
    }

    [Test]
    public void AnAddedTokenBeatsBytePairsAndShorterWholeTokens()
    {
        // "hello" alone is BPE token 261; as an added token it is matched before BPE.
        _tokenizer.AddToken("hello wor", 301);
        // Two spaces are 270, but "  x" is now one longer whole token starting at the same place.
        _tokenizer.AddToken("  x", 302);
        Assert.That(_tokenizer.Encode("hello world  x"), Is.EqualTo(new[] { 301, 266, 302 }));
    }

    [Test]
    public void AddTokenRefusesConflicts()
    {
        _tokenizer.AddToken("phi2native", 300);
        var taken = Assert.Throws<TokenizerException>(() => _tokenizer.AddToken("other", 261));
        Assert.That(taken!.Message, Does.Contain("261").And.Contain("\"hello\""));
        Assert.Throws<TokenizerException>(() => _tokenizer.AddToken("other", 300));
        var again = Assert.Throws<TokenizerException>(() => _tokenizer.AddToken("phi2native", 301));
        Assert.That(again!.Message, Does.Contain("already token 300"));
        Assert.Throws<TokenizerException>(() => _tokenizer.AddToken("", 400));
        Assert.Throws<TokenizerException>(() => _tokenizer.AddToken("neg", -1));
        Assert.That(_tokenizer.AddedTokens, Has.Count.EqualTo(1));
    }
}
