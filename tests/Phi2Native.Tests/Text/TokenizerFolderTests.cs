using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>
/// Loading a model folder: the files HF uses for added tokens, Phi2Tokenizer's built-in run tokens, and bad files,
/// each of which gives a <see cref="TokenizerException"/> naming the file.
/// </summary>
[TestFixture]
public class TokenizerFolderTests
{
    private string _temp = null!;
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _temp = Fixtures.TemporaryDirectory();
        _dir = Path.Combine(_temp, "model");
    }

    [TearDown] public void TearDown() => Directory.Delete(_temp, recursive: true);

    private string FilePath(string name) => Path.Combine(_dir, name);

    private static object AddedToken(int id, string content, bool lstrip = false) => new
    {
        id, content, single_word = false, lstrip, rstrip = false, normalized = true, special = false,
    };

    [Test]
    public void AddedTokensComeFromTokenizerJsonAndTokenizerConfig()
    {
        TinyBpeFolder.Write(_dir, withAddedTokens: false);
        File.WriteAllText(FilePath("tokenizer.json"), JsonSerializer.Serialize(new
        {
            version = "1.0",
            added_tokens = new[] { AddedToken(269, "<|endoftext|>"), AddedToken(270, "  "), AddedToken(272, "\t\t") },
        }));
        File.WriteAllText(FilePath("tokenizer_config.json"), JsonSerializer.Serialize(new
        {
            added_tokens_decoder = new Dictionary<string, object> { ["271"] = AddedToken(271, "    ") },
            eos_token = "<|endoftext|>",
        }));
        var tokenizer = TextTokenizer.FromModelFolder(_dir);
        // The same encodings as with added_tokens.json (see TextTokenizerTests).
        Assert.That(tokenizer.Encode("a   b"), Is.EqualTo(new[] { 64, 270, 220, 65 }));
        Assert.That(tokenizer.Encode("a    b"), Is.EqualTo(new[] { 64, 271, 65 }));
        Assert.That(tokenizer.Encode("\t\t\tx"), Is.EqualTo(new[] { 272, 197, 87 }));
        Assert.That(tokenizer.AddedTokens, Is.Empty, "the folder's own tokens are not AddToken's");
    }

    [Test]
    public void AddedTokenFlagsThatAreNotAppliedAreReported()
    {
        TinyBpeFolder.Write(_dir);
        File.WriteAllText(FilePath("tokenizer.json"), JsonSerializer.Serialize(new { added_tokens = new[] { AddedToken(270, "  ", lstrip: true) } }));
        var warnings = new List<string>();
        TextTokenizer.FromModelFolder(_dir, warnings.Add);
        Assert.That(warnings, Has.Count.EqualTo(1));
        Assert.That(warnings[0], Does.Contain("lstrip").And.Contain("tokenizer.json"));
    }

    [Test]
    public void AFolderNumberedAsPhi2GetsPhi2sRunTokensFromPhi2Tokenizer()
    {
        // vocab.json + merges.txt alone, with <|endoftext|> at 50256: the files of Phi-2's folder that matter.
        TinyBpeFolder.Write(_dir, endOfTextId: 50256, withAddedTokens: false);
        var warnings = new List<string>();
        var tokenizer = TextTokenizer.FromModelFolder(_dir, warnings.Add);
        Assert.That(warnings, Is.Empty);
        Assert.That(tokenizer.EndOfTextId, Is.EqualTo(50256));
        Assert.That(tokenizer.VocabularySize, Is.EqualTo(50295));
        // Phi-2: 2 spaces = 50286, 31 spaces = 50257, 9 spaces = 50279, 9 tabs = 50287, 2 tabs = 50294.
        Assert.That(tokenizer.Encode("a  b"), Is.EqualTo(new[] { 64, 50286, 65 }));
        Assert.That(tokenizer.Encode("x" + new string(' ', 40) + "y"), Is.EqualTo(new[] { 87, 50257, 50279, 88 }));
        Assert.That(tokenizer.Encode(new string('\t', 11)), Is.EqualTo(new[] { 50287, 50294 }));
        Assert.That(tokenizer.TokenText(50286), Is.EqualTo("  "));
        Assert.That(tokenizer.Decode([87, 50257, 50279, 88]), Is.EqualTo("x" + new string(' ', 40) + "y"));
    }

    [Test]
    public void AVocabularyNumberedOtherwiseMustBringItsOwnRunTokens()
    {
        TinyBpeFolder.Write(_dir, withAddedTokens: false);
        var e = Assert.Throws<TokenizerException>(() => TextTokenizer.FromModelFolder(_dir));
        Assert.That(e!.FilePath, Is.EqualTo(FilePath("vocab.json")));
        Assert.That(e.Message, Does.Contain("added_tokens.json"));

        // Two spaces cover every run of spaces, but nothing covers runs of tabs.
        TinyBpeFolder.Write(_dir, new Dictionary<string, int> { ["  "] = 270 });
        e = Assert.Throws<TokenizerException>(() => TextTokenizer.FromModelFolder(_dir));
        Assert.That(e!.Message, Does.Contain("\\t\\t"));
    }

    [Test]
    public void AMergesFileWithoutHeaderKeepsItsFirstMerge()
    {
        // Phi2Tokenizer skips line 1 of merges.txt unread; " t" must still merge by rank 1 into Ġt = 256.
        TinyBpeFolder.Write(_dir);
        File.WriteAllLines(FilePath("merges.txt"), TinyBpeFolder.Merges);
        Assert.That(TextTokenizer.FromModelFolder(_dir).Encode(" t"), Is.EqualTo(new[] { 256 }));
    }

    [Test]
    public void MissingFolderAndMissingFileAreNamed()
    {
        var e = Assert.Throws<TokenizerException>(() => TextTokenizer.FromModelFolder(_dir));
        Assert.That(e!.Message, Does.Contain(_dir));

        TinyBpeFolder.Write(_dir);
        File.Delete(FilePath("merges.txt"));
        e = Assert.Throws<TokenizerException>(() => TextTokenizer.FromModelFolder(_dir));
        Assert.That(e!.FilePath, Is.EqualTo(FilePath("merges.txt")));
    }

    private TokenizerException LoadFails(string file, string contents)
    {
        TinyBpeFolder.Write(_dir);
        File.WriteAllText(FilePath(file), contents);
        var e = Assert.Throws<TokenizerException>(() => TextTokenizer.FromModelFolder(_dir))!;
        Assert.That(e.FilePath, Is.EqualTo(FilePath(file)));
        Assert.That(e.Message, Does.StartWith(FilePath(file) + ": "));
        return e;
    }

    [Test]
    public void MalformedVocabularyIsNamed()
    {
        Assert.That(LoadFails("vocab.json", "{\"a\": 1,").Message, Does.Contain("not valid JSON"));
        Assert.That(LoadFails("vocab.json", "[1, 2]").Message, Does.Contain("JSON object"));
        var vocabulary = TinyBpeFolder.Vocabulary();
        vocabulary["hello"] = -3;
        Assert.That(LoadFails("vocab.json", JsonSerializer.Serialize(vocabulary)).Message, Does.Contain("\"hello\" has id -3"));
        vocabulary = TinyBpeFolder.Vocabulary();
        vocabulary["hello"] = 260;
        Assert.That(LoadFails("vocab.json", JsonSerializer.Serialize(vocabulary)).Message, Does.Contain("share id 260"));
        vocabulary = TinyBpeFolder.Vocabulary();
        vocabulary.Remove("Ġ");
        Assert.That(LoadFails("vocab.json", JsonSerializer.Serialize(vocabulary)).Message, Does.Contain("0x20"));
        vocabulary = TinyBpeFolder.Vocabulary();
        vocabulary.Remove("<|endoftext|>");
        Assert.That(LoadFails("vocab.json", JsonSerializer.Serialize(vocabulary)).Message, Does.Contain("<|endoftext|>"));
    }

    [Test]
    public void MalformedMergesAreNamedWithTheirLine()
    {
        Assert.That(LoadFails("merges.txt", "#version: 0.2\nĠ t\nhe\n").Message, Does.Contain("line 3"));
        Assert.That(LoadFails("merges.txt", "#version: 0.2\nĠ t\nh  e\n").Message, Does.Contain("line 3"));
        Assert.That(LoadFails("merges.txt", "#version: 0.2\nq z\n").Message, Does.Contain("line 2").And.Contain("\"qz\""));
        Assert.That(LoadFails("merges.txt", "Ġ t\nh e\nĠ t\n").Message, Does.Contain("line 3 repeats the merge of line 1"));
    }

    [Test]
    public void InconsistentAddedTokensAreNamed()
    {
        Assert.That(LoadFails("added_tokens.json", "{\"  \": 261}").Message, Does.Contain("\"hello\""));
        Assert.That(LoadFails("added_tokens.json", "{\"  \": \"x\"}").Message, Does.Contain("ids are integers"));
        Assert.That(LoadFails("added_tokens.json", "{\"<|endoftext|>\": 280}").Message, Does.Contain("vocab.json gives it 269"));
        var e = LoadFails("tokenizer.json", JsonSerializer.Serialize(new { added_tokens = new[] { AddedToken(271, "  ") } }));
        Assert.That(e.Message, Does.Contain("added_tokens.json"));
    }
}
