using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>
/// A table of already formatted cells, printed as plain aligned text (readable in a log file, no terminal needed)
/// or as Markdown for bench/RESULTS.md. Columns of numbers (where "-" and "inf" may stand in) are right-aligned.
/// </summary>
internal sealed class TextTable(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    /// <summary>Adds a row of exactly as many cells as there are headers.</summary>
    public void Add(params string[] cells)
    {
        if (cells.Length != headers.Length) throw new ArgumentException($"{cells.Length} cells for {headers.Length} columns", nameof(cells));
        _rows.Add(cells);
    }

    /// <summary>Writes the header, a rule and the rows.</summary>
    public void Write(TextWriter output, bool markdown)
    {
        int[] widths = [.. headers.Select((h, i) => Math.Max(h.Length, _rows.Select(r => r[i].Length).DefaultIfEmpty(0).Max()))];
        bool[] numeric = [.. headers.Select((_, i) => _rows.Any(r => IsNumber(r[i])) && _rows.All(r => IsNumber(r[i]) || r[i] is "-" or "inf"))];
        string Cell(string text, int i) => numeric[i] ? text.PadLeft(widths[i]) : text.PadRight(widths[i]);
        string Line(IEnumerable<string> cells) => markdown ? $"| {string.Join(" | ", cells)} |" : string.Join("  ", cells).TrimEnd();

        output.WriteLine(Line(headers.Select(Cell)));
        output.WriteLine(markdown
            ? $"|{string.Join("|", widths.Select((w, i) => numeric[i] ? new string('-', w + 1) + ":" : new string('-', w + 2)))}|"
            : string.Join("  ", widths.Select(w => new string('-', w))));
        foreach (string[] row in _rows) output.WriteLine(Line(row.Select(Cell)));
    }

    private static bool IsNumber(string text) => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
}
