using System.Diagnostics;
using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>
/// GPT-2's tokenizer, the fallback for a model folder without vocab.json and merges.txt; and GPT-2's own vocabulary
/// as a Phi-2 folder, which must tokenize as Phi-2 does.
/// </summary>
[TestFixture]
public class Gpt2TokenizerTests
{
    [Test]
    public void AFolderWithoutTokenizerFilesFallsBackToGpt2AndWarns()
    {
        string dir = Fixtures.TemporaryDirectory();
        try
        {
            var warnings = new List<string>();
            var tokenizer = TextTokenizer.FromModelFolder(dir, warnings.Add);
            Assert.That(warnings, Has.Count.EqualTo(1));
            Assert.That(warnings[0], Does.Contain("GPT-2").And.Contain("spaces").And.Contain(dir));
            // GPT-2's (and Phi-2's) well-known ids: "Hello" = 15496, " world" = 995.
            Assert.That(tokenizer.Encode("Hello world"), Is.EqualTo(new[] { 15496, 995 }));
            Assert.That(tokenizer.Source, Does.Contain("GPT-2"));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void Gpt2HasNoRunTokens()
    {
        var tokenizer = TextTokenizer.Gpt2();
        Assert.That(tokenizer.VocabularySize, Is.EqualTo(50257));
        Assert.That(tokenizer.EndOfTextId, Is.EqualTo(50256));
        // Phi-2 gives Hello | two spaces (50286) | world; GPT-2 gives Hello | Ġ (220) | Ġworld (995).
        Assert.That(tokenizer.Encode("Hello  world"), Is.EqualTo(new[] { 15496, 220, 995 }));
        Assert.That(tokenizer.Encode("<|endoftext|>Hello"), Is.EqualTo(new[] { 50256, 15496 }));
    }

    [Test]
    public void Gpt2PiecesDecodingAndAddedTokens()
    {
        var tokenizer = TextTokenizer.Gpt2();
        Assert.That(tokenizer.TokenText(995), Is.EqualTo("Ġworld"));
        Assert.That(tokenizer.TokenText(50256), Is.EqualTo("<|endoftext|>"));
        Assert.That(tokenizer.TokenText(50257), Is.Null);
        const string text = "naïve café 日本語 😀\n\ttabs  and   spaces";
        Assert.That(tokenizer.Decode(tokenizer.Encode(text)), Is.EqualTo(text));

        tokenizer.AddToken("<think>", 50295);
        Assert.That(tokenizer.Encode("<think>Hello"), Is.EqualTo(new[] { 50295, 15496 }));
        Assert.That(tokenizer.Decode([50295, 15496]), Is.EqualTo("<think>Hello"));
        Assert.That(tokenizer.VocabularySize, Is.EqualTo(50296));
    }

    [Test]
    public void Gpt2sVocabularyAsAModelFolderTokenizesAsPhi2()
    {
        // Phi-2's vocab.json and merges.txt are GPT-2's; Phi-2 adds only the whole tokens 50257..50294.
        string dir = Fixtures.TemporaryDirectory();
        try
        {
            var watch = Stopwatch.StartNew();
            WriteGpt2Folder(dir);
            var phi2 = TextTokenizer.FromModelFolder(dir);
            TestContext.Out.WriteLine($"GPT-2 folder written and loaded in {watch.ElapsedMilliseconds} ms: {phi2.Source}");
            Assert.That(phi2.VocabularySize, Is.EqualTo(50295));
            Assert.That(phi2.Encode("Hello world"), Is.EqualTo(new[] { 15496, 995 }));
            // Two spaces are Phi-2's 50286, and "world" (6894) then carries no space.
            Assert.That(phi2.Encode("Hello  world"), Is.EqualTo(new[] { 15496, 50286, 6894 }));
            // def Ġf (): Ċ, four spaces (50284), return (7783, no space), Ġ1.
            Assert.That(phi2.Encode("def f():\n    return 1"), Is.EqualTo(new[] { 4299, 277, 33529, 198, 50284, 7783, 352 }));
            const string text = "Naïve café, 日本語 and 😀: x = 3.14159; don't stop\n\nThe end. It's 2024! (a, b) => a + b\n";
            Assert.That(phi2.Encode(text), Is.EqualTo(TextTokenizer.Gpt2().Encode(text)), "without runs of spaces or tabs Phi-2 is GPT-2");
            Assert.That(phi2.Decode(phi2.Encode(text)), Is.EqualTo(text));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>
    /// GPT-2's vocab.json and merges.txt, rebuilt from its tiktoken ranks: a token's merge is the last step of
    /// BPE on its own bytes using only lower-ranked tokens, which leaves exactly two parts.
    /// </summary>
    private static void WriteGpt2Folder(string dir)
    {
        var pieces = TokenizerFiles.Gpt2Pieces.Value;
        var rank = pieces.ToDictionary(kv => kv.Value, kv => kv.Key);
        var merges = new List<string>();
        foreach (var (id, piece) in pieces.OrderBy(kv => kv.Key))
        {
            if (piece.Length < 2) continue;
            var parts = piece.Select(c => c.ToString()).ToList();
            while (true)
            {
                int best = -1, bestRank = id;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (rank.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            Assert.That(parts, Has.Count.EqualTo(2), $"token {id} {piece}");
            merges.Add(parts[0] + " " + parts[1]);
        }
        var vocabulary = new Dictionary<string, int>(rank) { ["<|endoftext|>"] = 50256 };
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocabulary));
        File.WriteAllLines(Path.Combine(dir, "merges.txt"), ["#version: 0.2", .. merges]);
    }
}
