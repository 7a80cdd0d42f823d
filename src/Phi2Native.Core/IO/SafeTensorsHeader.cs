using System.Text.Json;
using System.Text.Unicode;
using Phi2Native.Tensors;

namespace Phi2Native.IO;

/// <summary>
/// Parses and validates a safetensors header: the JSON object that follows the 8-byte length prefix.
/// </summary>
/// <remarks>
/// Format (https://github.com/huggingface/safetensors): <c>u64 little-endian N</c>, then N bytes of UTF-8 JSON,
/// then the data section. The JSON maps each tensor name to <c>{"dtype", "shape", "data_offsets": [begin, end]}</c>
/// with offsets relative to the data section, plus an optional <c>"__metadata__"</c> string-to-string map.
/// Every check here exists so that a bad file fails at open with a message naming the file and tensor,
/// rather than later as a wrong shape, a garbage weight or an access violation in the mapped view.
/// Unknown keys inside a tensor entry are ignored, as the reference implementation does. As it does too, the tensors
/// must cover the data section exactly: in offset order each starts where the one before ends (zero-byte tensors
/// included), so two tensors never share a byte, no byte lies between them, and none follows the last one. A file
/// that breaks this was not written by a safetensors writer, and the bytes it hides are refused rather than skipped.
/// </remarks>
internal static class SafeTensorsHeader
{
    /// <summary>Largest header accepted; the reference implementation's limit, which stops a corrupt length from allocating gigabytes.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>The reserved key that holds the file's metadata instead of a tensor.</summary>
    public const string MetadataKey = "__metadata__";

    /// <summary>A validated header.</summary>
    public sealed record Parsed(Dictionary<string, string> Metadata, SafeTensorInfo[] Tensors);

    /// <summary>
    /// Parses <paramref name="header"/> and checks every entry against a data section of
    /// <paramref name="dataLength"/> bytes. Throws <see cref="SafeTensorsFormatException"/> on the first problem.
    /// </summary>
    public static Parsed Parse(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        // System.Text.Json would report bad UTF-8 only inside strings it happens to decode; checking the
        // whole header first gives one clear message for every encoding error.
        if (!Utf8.IsValid(header))
            throw Fail(path, "the header is not valid UTF-8");

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header.ToArray());
        }
        catch (JsonException e)
        {
            throw new SafeTensorsFormatException(path, $"the header is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Fail(path, $"the header must be a JSON object, found {Describe(root.ValueKind)}");

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var tensors = new List<SafeTensorInfo>();
            // JsonDocument keeps duplicate properties, and a reader that silently took the first or the last
            // could load a different tensor than another tool does; so they are an error.
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw Fail(path, $"the header has the key '{property.Name}' more than once");
                if (property.Name == MetadataKey)
                    metadata = ParseMetadata(path, property.Value);
                else
                    tensors.Add(ParseTensor(path, property.Name, property.Value, dataLength));
            }

            CheckExactCoverage(path, tensors, dataLength);
            return new Parsed(metadata, tensors.ToArray());
        }
    }

    private static Dictionary<string, string> ParseMetadata(string path, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Fail(path, $"'{MetadataKey}' must be an object of string values, found {Describe(value.ValueKind)}");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (JsonProperty entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw Fail(path, $"'{MetadataKey}' entry '{entry.Name}' must be a string, found {Describe(entry.Value.ValueKind)}");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw Fail(path, $"'{MetadataKey}' has the key '{entry.Name}' more than once");
        }
        return metadata;
    }

    private static SafeTensorInfo ParseTensor(string path, string name, JsonElement entry, long dataLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw Fail(path, name, $"the entry must be an object, found {Describe(entry.ValueKind)}");

        JsonElement? dtypeElement = null, shapeElement = null, offsetsElement = null;
        foreach (JsonProperty field in entry.EnumerateObject())
        {
            switch (field.Name)
            {
                case "dtype": Assign(ref dtypeElement, field); break;
                case "shape": Assign(ref shapeElement, field); break;
                case "data_offsets": Assign(ref offsetsElement, field); break;
            }
        }

        void Assign(ref JsonElement? slot, JsonProperty field)
        {
            if (slot is not null)
                throw Fail(path, name, $"the entry has '{field.Name}' more than once");
            slot = field.Value;
        }

        // dtype
        if (dtypeElement is not { } dtypeValue)
            throw Fail(path, name, "the entry has no 'dtype'");
        if (dtypeValue.ValueKind != JsonValueKind.String)
            throw Fail(path, name, $"'dtype' must be a string, found {Describe(dtypeValue.ValueKind)}");
        string dtypeName = dtypeValue.GetString()!;
        if (!SafeTensorsDTypes.TryGetSize(dtypeName, out int elementSize))
            throw Fail(path, name, $"unknown dtype '{dtypeName}' (known: {SafeTensorsDTypes.KnownNames})");
        DType? dtype = DTypes.TryParseSafeTensorsName(dtypeName, out DType parsed) ? parsed : null;

        // shape
        if (shapeElement is not { } shapeValue)
            throw Fail(path, name, "the entry has no 'shape'");
        if (shapeValue.ValueKind != JsonValueKind.Array)
            throw Fail(path, name, $"'shape' must be an array of non-negative integers, found {Describe(shapeValue.ValueKind)}");
        var shape = new long[shapeValue.GetArrayLength()];
        long elementCount = 1;
        int axis = 0;
        foreach (JsonElement dim in shapeValue.EnumerateArray())
        {
            if (!TryGetNonNegative(dim, out long size))
                throw Fail(path, name, $"'shape'[{axis}] must be a non-negative integer, found {dim.GetRawText()}");
            shape[axis++] = size;
            // A huge dimension multiplied out must fail here, not wrap around to a small, plausible size.
            if (!TryMultiply(elementCount, size, out elementCount))
                throw Fail(path, name, $"the element count of shape {Text(shape)} overflows a 64-bit integer");
        }

        // data_offsets
        if (offsetsElement is not { } offsetsValue)
            throw Fail(path, name, "the entry has no 'data_offsets'");
        if (offsetsValue.ValueKind != JsonValueKind.Array || offsetsValue.GetArrayLength() != 2)
            throw Fail(path, name, $"'data_offsets' must be an array of two non-negative integers, found {offsetsValue.GetRawText()}");
        if (!TryGetNonNegative(offsetsValue[0], out long begin) || !TryGetNonNegative(offsetsValue[1], out long end))
            throw Fail(path, name, $"'data_offsets' must be an array of two non-negative integers, found {offsetsValue.GetRawText()}");
        if (begin > end)
            throw Fail(path, name, $"'data_offsets' begin {begin} is after end {end}");

        if (!TryMultiply(elementCount, elementSize, out long expectedBytes))
            throw Fail(path, name, $"the byte size of shape {Text(shape)} x {elementSize} bytes overflows a 64-bit integer");
        if (end - begin != expectedBytes)
            throw Fail(path, name,
                $"'data_offsets' [{begin}, {end}] span {end - begin} bytes, but shape {Text(shape)} of {dtypeName} needs {expectedBytes}");
        // This is also what catches a file cut short in its data section.
        if (end > dataLength)
            throw Fail(path, name,
                $"'data_offsets' end {end} is beyond the data section, which holds {dataLength} bytes (truncated file?)");

        return new SafeTensorInfo(name, dtypeName, dtype, shape, elementCount, begin, end);
    }

    private static void CheckExactCoverage(string path, List<SafeTensorInfo> tensors, long dataLength)
    {
        // The reference implementation's order: by begin, then end (so a zero-byte tensor comes before one that starts with it).
        long covered = 0;
        SafeTensorInfo? previous = null;
        foreach (SafeTensorInfo current in tensors.OrderBy(t => t.DataBegin).ThenBy(t => t.DataEnd))
        {
            if (current.DataBegin < covered)
                throw Fail(path,
                    $"tensor '{current.Name}' [{current.DataBegin}, {current.DataEnd}) overlaps tensor '{previous!.Name}' [{previous.DataBegin}, {previous.DataEnd})");
            if (current.DataBegin > covered)
                throw Fail(path, current.Name,
                    $"it starts at byte {current.DataBegin} of the data section, but the tensors before it end at {covered}: " +
                    $"bytes [{covered}, {current.DataBegin}) belong to no tensor (a gap, which the format does not allow)");
            covered = current.DataEnd;
            previous = current;
        }
        if (covered != dataLength)
            throw Fail(path, previous is null
                ? $"the header lists no tensor, but the data section holds {dataLength} bytes; the format allows none"
                : $"the data section holds {dataLength} bytes, but the tensors end at {covered} (tensor '{previous.Name}'): " +
                  $"{dataLength - covered} bytes after the last tensor belong to none (the format does not allow them)");
    }

    private static bool TryGetNonNegative(JsonElement element, out long value)
    {
        value = 0;
        return element.ValueKind == JsonValueKind.Number && element.TryGetInt64(out value) && value >= 0;
    }

    private static bool TryMultiply(long a, long b, out long product)
    {
        // Both factors are non-negative here, so one division decides overflow without relying on exceptions.
        if (b != 0 && a > long.MaxValue / b)
        {
            product = 0;
            return false;
        }
        product = a * b;
        return true;
    }

    private static string Text(long[] shape) => "[" + string.Join(", ", shape) + "]";

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    private static SafeTensorsFormatException Fail(string path, string message) => new(path, message);

    private static SafeTensorsFormatException Fail(string path, string tensor, string message) =>
        new(path, $"tensor '{tensor}': {message}");
}
