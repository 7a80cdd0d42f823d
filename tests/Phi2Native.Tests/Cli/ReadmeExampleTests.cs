using System.Text;
using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Cli.Commands;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// Every `phi2` command line in README.md's shell blocks parses as written (bash quoting, line continuations; a bare
/// "..." and [optional] brackets are the README's notation), so an option renamed or mistyped there fails here; and its
/// exit-code table lists exactly the codes the commands use, and its preset table exactly the presets.
/// </summary>
[TestFixture]
public partial class ReadmeExampleTests
{
    private const string DotnetRun = "dotnet run --project src/Phi2Native.Cli -c Release --";

    private static IEnumerable<TestCaseData> Examples()
    {
        string readme = File.ReadAllText(Path.Combine(Fixtures.RepositoryRoot, "README.md"));
        foreach (Match block in ShellBlock().Matches(readme))
        {
            // Joined continuation lines, then one command per line.
            foreach (string line in block.Groups[1].Value.Replace("\\\n", " ").Split('\n'))
            {
                // A bare ... stands for "the other options"; a quoted "..." is a value.
                var words = ShellWords(Ellipsis().Replace(line, ""));
                int start = words.Count > 0 && words[0] == "phi2" ? 1
                    : string.Join(' ', words.Take(7)) == DotnetRun ? 7 : -1;
                if (start < 0) continue;
                var args = words.Skip(start).Select(w => w.Trim('[', ']')).ToArray();
                yield return new TestCaseData((object)args).SetArgDisplayNames(string.Join(' ', args.Take(3)));
            }
        }
    }

    [TestCaseSource(nameof(Examples))]
    public void ParsesAsWritten(string[] args)
    {
        var result = Phi2Native.Cli.Program.Parse(args, TextWriter.Null, TextWriter.Null);
        Assert.That(result.Errors.Select(e => e.Message), Is.Empty, string.Join(' ', args));
    }

    [Test]
    public void TheExamplesCoverEveryCommandAndTheirEscapesMeanWhatTheySay()
    {
        var all = Examples().Select(c => (string[])c.Arguments[0]!).ToList();
        Assert.That(all.Select(a => a[0]).Distinct(), Is.SupersetOf(new[] { "demo", "trace", "generate", "tokenize", "layers", "finetune", "merge" }));
        // --stop and --text take text literally: the README's blank-line stop must reach the command as two newlines.
        Assert.That(all.Where(a => a.Contains("--stop")).Select(a => a[Array.IndexOf(a, "--stop") + 1]), Has.Some.EqualTo("\n\n"));
        Assert.That(all.Where(a => a[0] == "tokenize").Select(a => a[Array.IndexOf(a, "--text") + 1]), Has.All.Not.Contain("\\n"));
    }

    [Test]
    public void TheExitCodeTableListsEveryExitCode()
    {
        string readme = File.ReadAllText(Path.Combine(Fixtures.RepositoryRoot, "README.md"));
        var rows = ExitCodeRow().Matches(readme).Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        Assert.That(rows, Is.EqualTo(new[] { ExitCodes.Done, ExitCodes.EngineFault, ExitCodes.BadInput, ExitCodes.NonFinite, ExitCodes.Interrupted, ExitCodes.Terminated }));
    }

    [Test]
    public void ThePresetTableIsThePresets()
    {
        string readme = File.ReadAllText(Path.Combine(Fixtures.RepositoryRoot, "README.md"));
        var rows = PresetRow().Matches(readme)
            .Select(m => $"{m.Groups[1].Value} | {m.Groups[2].Value} | {m.Groups[3].Value.Replace("`", "")} | {m.Groups[4].Value}");
        Assert.That(rows, Is.EqualTo(TaskPreset.All.Select(p => $"{p.Name} | {p.Goal} | {string.Join(", ", p.Modules)} | {p.Why}")));
    }

    /// <summary>Bash's word splitting for what the README uses: '...', "..." (with \" and \\), $'...' (with \n, \t, \\, \'), # comments.</summary>
    internal static List<string> ShellWords(string line)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        bool inWord = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (char.IsWhiteSpace(c))
            {
                if (inWord) words.Add(word.ToString());
                word.Clear();
                inWord = false;
                continue;
            }
            if (c == '#' && !inWord) break;
            inWord = true;
            if (c == '$' && i + 1 < line.Length && line[i + 1] == '\'')
            {
                for (i += 2; i < line.Length && line[i] != '\''; i++)
                    word.Append(line[i] == '\\' && i + 1 < line.Length
                        ? line[++i] switch { 'n' => '\n', 't' => '\t', var other => other }
                        : line[i]);
            }
            else if (c == '\'')
            {
                for (i++; i < line.Length && line[i] != '\''; i++) word.Append(line[i]);
            }
            else if (c == '"')
            {
                for (i++; i < line.Length && line[i] != '"'; i++)
                    word.Append(line[i] == '\\' && i + 1 < line.Length && line[i + 1] is '"' or '\\' or '$' ? line[++i] : line[i]);
            }
            else word.Append(c == '\\' && i + 1 < line.Length ? line[++i] : c);
        }
        if (inWord) words.Add(word.ToString());
        return words;
    }

    [Test]
    public void ShellWordsFollowsBash()
    {
        Assert.That(ShellWords("""phi2 x --a "b c" --d $'\n\n' 'e\n' f\ g # h"""), Is.EqualTo(new[] { "phi2", "x", "--a", "b c", "--d", "\n\n", "e\\n", "f g" }));
        Assert.That(ShellWords("""--stop "\n\n" """), Is.EqualTo(new[] { "--stop", "\\n\\n" }), "inside double quotes a backslash-n stays two characters");
    }

    [GeneratedRegex(@"^\s*\| `(\d+)` \|", RegexOptions.Multiline)]
    private static partial Regex ExitCodeRow();

    // | `name` | goal | `module`, `module` | why |
    [GeneratedRegex(@"^\s*\| `([a-z-]+)` \| ([^|`]+) \| (`[^|]+`) \| ([^|]+) \|$", RegexOptions.Multiline)]
    private static partial Regex PresetRow();

    [GeneratedRegex(@"(?<=\s)\.\.\.(?=\s|$)")]
    private static partial Regex Ellipsis();

    [GeneratedRegex("```(?:sh|bash)\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ShellBlock();
}
