using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>
/// A table of already formatted cells, printed as plain aligned text (readable in a log file, no terminal needed)
/// or as Markdown for bench/RESULTS.md. Columns of numbers (where "-" and "inf" may stand in) are right-aligned.
/// </summary>
internal sealed class TextTable(params string[] headers)
{
    private readonly string[] _headers = headers;
    private readonly List<string[]> _rows = [];

    /// <summary>Adds a row of exactly as many cells as there are headers.</summary>
    public void Add(params string[] cells)
    {
        if (cells.Length != _headers.Length) throw new ArgumentException($"{cells.Length} cells for {_headers.Length} columns", nameof(cells));
        _rows.Add(cells);
    }

    /// <summary>Writes the header, a rule and the rows.</summary>
    public void Write(TextWriter output, bool markdown)
    {
        // A '|' inside a Markdown cell ("max |error|") would end the cell.
        string[] head = markdown ? [.. _headers.Select(Escape)] : _headers;
        List<string[]> rows = markdown ? [.. _rows.Select(r => r.Select(Escape).ToArray())] : _rows;
        int[] widths = [.. head.Select((h, i) => Math.Max(h.Length, rows.Select(r => r[i].Length).DefaultIfEmpty(0).Max()))];
        bool[] numeric = [.. head.Select((_, i) => rows.Any(r => IsNumber(r[i])) && rows.All(r => IsNumber(r[i]) || r[i] is "-" or "inf"))];
        string Cell(string text, int i) => numeric[i] ? text.PadLeft(widths[i]) : text.PadRight(widths[i]);
        string Line(IEnumerable<string> cells) => markdown ? $"| {string.Join(" | ", cells)} |" : string.Join("  ", cells).TrimEnd();

        output.WriteLine(Line(head.Select(Cell)));
        output.WriteLine(markdown
            ? $"|{string.Join("|", widths.Select((w, i) => numeric[i] ? new string('-', w + 1) + ":" : new string('-', w + 2)))}|"
            : string.Join("  ", widths.Select(w => new string('-', w))));
        foreach (string[] row in rows) output.WriteLine(Line(row.Select(Cell)));
    }

    private static string Escape(string cell) => cell.Replace("|", "\\|", StringComparison.Ordinal);

    private static bool IsNumber(string text) => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
}
