using System.Globalization;

namespace Phi2Native.Bench;

/// <summary>A results table printed with aligned columns, or as Markdown for RESULTS.md.</summary>
internal sealed class Table(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    /// <summary>Adds a row; cells are already formatted.</summary>
    public void Add(params string[] cells) => _rows.Add(cells);

    /// <summary>Writes the table; numeric-looking columns are right-aligned.</summary>
    public void Write(TextWriter output, bool markdown)
    {
        int[] widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Select(r => r[i].Length).DefaultIfEmpty(0).Max())).ToArray();
        bool[] numeric = headers.Select((_, i) => _rows.Count > 0 && _rows.All(r => double.TryParse(r[i], CultureInfo.InvariantCulture, out double _))).ToArray();
        string Cell(string s, int i) => numeric[i] ? s.PadLeft(widths[i]) : s.PadRight(widths[i]);
        string Line(IEnumerable<string> cells) => markdown ? $"| {string.Join(" | ", cells)} |" : string.Join("  ", cells);

        output.WriteLine(Line(headers.Select(Cell)));
        output.WriteLine(markdown
            ? $"|{string.Join("|", widths.Select((w, i) => numeric[i] ? new string('-', w + 1) + ":" : new string('-', w + 2)))}|"
            : string.Join("  ", widths.Select(w => new string('-', w))));
        foreach (string[] row in _rows) output.WriteLine(Line(row.Select(Cell)));
    }
}
