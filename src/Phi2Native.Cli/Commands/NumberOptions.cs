using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// How every numeric option of every command reads its value, installed once over the whole command tree: whole numbers
/// and floating numbers in the invariant culture, floating ones finite (NaN, Infinity and 1e999 are refused before any
/// command runs), and a message that names the option and says what it expects instead of a .NET type name. Ranges
/// beyond that (a probability, a positive rate) are each command's or the library's checks.
/// </summary>
internal static class NumberOptions
{
    /// <summary>Options of this name are seeds: whole numbers from 0.</summary>
    private const string SeedName = "--seed";

    /// <summary>Installs the parsers on every numeric option of <paramref name="command"/> and of its subcommands.</summary>
    public static void Install(Command command)
    {
        foreach (var option in command.Options) Install(option);
        foreach (var subcommand in command.Subcommands) Install(subcommand);
    }

    private static void Install(Option option)
    {
        string name = option.Name;
        switch (option)
        {
            case Option<double> real:
                real.CustomParser = result => Real(result, name) ?? 0;
                break;
            case Option<double?> real:
                real.CustomParser = result => Real(result, name);
                break;
            case Option<int> whole:
                whole.CustomParser = result => (int)(Whole(result, name, Minimum(name, int.MinValue), int.MaxValue) ?? 0);
                break;
            case Option<int?> whole:
                whole.CustomParser = result => (int?)Whole(result, name, Minimum(name, int.MinValue), int.MaxValue);
                break;
            case Option<ulong?> whole:
                whole.CustomParser = result => WholeUnsigned(result, name);
                break;
            case Option<ulong> or Option<long> or Option<long?> or Option<float> or Option<float?>:
                throw new InvalidOperationException($"{name}: {option.GetType().Name} has no parser here; add one");
        }
    }

    private static long Minimum(string name, long typeMinimum) => name == SeedName ? 0 : typeMinimum;

    private static double? Real(ArgumentResult result, string name)
    {
        string text = Text(result);
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
        {
            result.AddError($"{name} expects a number (e.g. 0.5 or 2e-4), got '{text}'");
            return null;
        }
        if (!double.IsFinite(value))
        {
            result.AddError($"{name} must be a finite number, got '{text}'");
            return null;
        }
        return value;
    }

    private static long? Whole(ArgumentResult result, string name, long minimum, long maximum)
    {
        string text = Text(result);
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value) && value >= minimum && value <= maximum)
            return value;
        result.AddError($"{name} expects {WholeNumber(name, minimum, (ulong)maximum)}, got '{text}'");
        return null;
    }

    private static ulong? WholeUnsigned(ArgumentResult result, string name)
    {
        string text = Text(result);
        if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value)) return value;
        result.AddError($"{name} expects {WholeNumber(name, 0, ulong.MaxValue)}, got '{text}'");
        return null;
    }

    private static string WholeNumber(string name, long minimum, ulong maximum) =>
        (name == SeedName ? "a seed: " : "") + $"a whole number from {minimum} to {maximum}";

    // Every numeric option takes one value; an option given twice keeps the last, as the parser does for others.
    private static string Text(ArgumentResult result) => result.Tokens.Count == 0 ? "" : result.Tokens[^1].Value;
}
