using System.CommandLine;
using Phi2Native.Hosting;

namespace Phi2Native.Cli.Commands;

/// <summary>`phi2 tokenize`: the ids and pieces of a text under a model's tokenizer, one token per line, then the ids on one line.</summary>
internal static class TokenizeCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Model folder with vocab.json and merges.txt (default: the embedded tiny model)." };
        var text = new Option<string>("--text") { Description = "The text to tokenize (may be empty: no ids).", Required = true };
        var command = new Command("tokenize", "Show how a text splits into token ids and pieces.") { model, text };
        command.SetAction(result => CommandErrors.Guard(error, () =>
        {
            Notices.Model(result.GetValue(model), Notices.Writer(result, error));
            var tokenizer = ModelSource.LoadTokenizer(result.GetValue(model), warning => error.WriteLine($"warning: {warning}"));
            var pieces = tokenizer.EncodeWithPieces(result.GetValue(text)!);
            foreach (var (id, piece) in pieces) output.WriteLine($"{id}\t{Visible(piece)}");
            output.WriteLine(string.Join(",", pieces.Select(p => p.Id)));
            return 0;
        }));
        return command;
    }

    // Whitespace made visible, so a run of spaces or a newline token can be told apart.
    private static string Visible(string piece) => piece.Replace("\n", "\\n").Replace("\t", "\\t").Replace(" ", "\u00b7");
}
