using System.CommandLine;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// "--text=" means "--text" with an empty value, as "--text \"\"" does; the parser alone would read it as a missing
/// value. Whether an empty value is accepted is each option's own rule (tokenize --text: yes; generate --prompt: from
/// bos_token_id; --stop: no).
/// </summary>
internal static class EmptyValues
{
    /// <summary><paramref name="args"/> with each "--name=" of an option of <paramref name="root"/>'s tree split into "--name" and "".</summary>
    public static string[] Expand(string[] args, Command root)
    {
        var names = new HashSet<string>(OptionNames(root), StringComparer.Ordinal);
        var expanded = new List<string>(args.Length);
        foreach (string arg in args)
        {
            if (arg.Length > 1 && arg[^1] == '=' && names.Contains(arg[..^1])) expanded.AddRange([arg[..^1], ""]);
            else expanded.Add(arg);
        }
        return [.. expanded];
    }

    private static IEnumerable<string> OptionNames(Command command) =>
        command.Options.SelectMany(o => o.Aliases.Append(o.Name)).Concat(command.Subcommands.SelectMany(OptionNames));
}
