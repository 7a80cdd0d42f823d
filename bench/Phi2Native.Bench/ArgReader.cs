namespace Phi2Native.Bench;

/// <summary>Hand-rolled option parsing: <c>--name value</c> pairs and bare <c>--flag</c>s; unknown options are errors.</summary>
internal sealed class ArgReader
{
    private readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _consumed = new(StringComparer.Ordinal);

    /// <summary>Splits <paramref name="args"/> into options; a token after an option that does not start with "--" is its value.</summary>
    public ArgReader(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"unexpected argument '{args[i]}'");
            string name = args[i][2..];
            string? value = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
            _options[name] = value;
        }
    }

    /// <summary>True when the bare flag <c>--name</c> was given.</summary>
    public bool Flag(string name)
    {
        _consumed.Add(name);
        if (!_options.TryGetValue(name, out string? value)) return false;
        if (value is not null) throw new ArgumentException($"--{name} takes no value (got '{value}')");
        return true;
    }

    /// <summary>The value of <c>--name</c>, or <paramref name="fallback"/> when absent.</summary>
    public string String(string name, string fallback)
    {
        _consumed.Add(name);
        if (!_options.TryGetValue(name, out string? value)) return fallback;
        return value ?? throw new ArgumentException($"--{name} needs a value");
    }

    /// <summary>The integer value of <c>--name</c> (at least <paramref name="min"/>), or <paramref name="fallback"/>.</summary>
    public int Int(string name, int fallback, int min = 1)
    {
        string text = String(name, fallback.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (!int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out int value) || value < min)
            throw new ArgumentException($"--{name} must be an integer >= {min} (got '{text}')");
        return value;
    }

    /// <summary>The value of <c>--name</c> as a finite number &gt;= 0, or <paramref name="fallback"/>.</summary>
    public double Double(string name, double fallback)
    {
        string text = String(name, fallback.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
        if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value) ||
            !double.IsFinite(value) || value < 0)
            throw new ArgumentException($"--{name} must be a number >= 0 (got '{text}')");
        return value;
    }

    /// <summary>Throws for any option that no accessor asked about (catches typos such as --rep).</summary>
    public void RejectUnknown()
    {
        var unknown = _options.Keys.Where(k => !_consumed.Contains(k)).ToList();
        if (unknown.Count > 0) throw new ArgumentException($"unknown option(s): {string.Join(", ", unknown.Select(u => "--" + u))}");
    }
}
