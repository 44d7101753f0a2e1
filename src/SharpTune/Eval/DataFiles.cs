// Evaluation data from the forms datasets are distributed in: JSON (an array of objects), JSON Lines, CSV (header
// row; a cell holding a JSON array/object is parsed as JSON; dotted headers such as `mc1_targets.choices` nest) and
// Parquet (Hugging Face's dataset layout, nested structs and lists included), read by the one reader the training
// data uses (Data/DataSources). Every row becomes a JSON object that remembers its file and row number, so a task can
// name both in its error messages.
// References: Hugging Face datasets' parquet export (refs/convert/parquet); RFC 4180 (CSV).
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpTune.Data;

namespace SharpTune.Eval;

/// <summary>One row of evaluation data (a <see cref="SharpTune.Data.DataRow"/> as a JSON object) with the typed accessors tasks use.</summary>
/// <param name="Fields">The record as a JSON object.</param>
/// <param name="File">The file it came from.</param>
/// <param name="Row">Its 1-based row (line for JSONL and CSV data rows, element for JSON, row for Parquet).</param>
public sealed record EvalRow(JsonObject Fields, string File, int Row)
{
    /// <summary>Where this row is, for error messages.</summary>
    public string Location => $"{File} row {Row}";

    /// <summary>The field <paramref name="name"/>, or a clear error naming it, the task, the file and the row.</summary>
    public JsonNode Require(string task, string name)
    {
        if (Fields.TryGetPropertyValue(name, out var node) && node is not null) return node;
        throw new InvalidDataException(
            $"{task}: {Location}: missing field '{name}' (fields present: {string.Join(", ", Fields.Select(f => f.Key))})");
    }

    /// <summary>A string field.</summary>
    public string RequireString(string task, string name) => AsString(task, name, Require(task, name));

    /// <summary>A string field of a nested object.</summary>
    public string AsString(string task, string name, JsonNode node) =>
        node is JsonValue v && v.TryGetValue<string>(out var s) ? s
        : throw new InvalidDataException($"{task}: {Location}: field '{name}' should be a string, found {Describe(node)}");

    /// <summary>A list of strings.</summary>
    public IReadOnlyList<string> AsStringList(string task, string name, JsonNode node) =>
        node is JsonArray a
            ? a.Select((x, i) => x is null ? throw Bad(task, $"{name}[{i}]", "a string", "null") : AsString(task, $"{name}[{i}]", x)).ToArray()
            : throw Bad(task, name, "a list of strings", Describe(node));

    /// <summary>An integer given as a JSON number or as a string of digits (Hugging Face stores some labels as strings).</summary>
    public int AsInt(string task, string name, JsonNode node)
    {
        if (node is JsonValue v)
        {
            if (v.TryGetValue<int>(out var i)) return i;
            if (v.TryGetValue<long>(out var l) && l is >= int.MinValue and <= int.MaxValue) return (int)l;
            if (v.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue) return (int)d;
            if (v.TryGetValue<bool>(out var b)) return b ? 1 : 0;
            if (v.TryGetValue<string>(out var s) && int.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var p))
                return p;
        }
        throw Bad(task, name, "an integer", Describe(node));
    }

    /// <summary>A list of integers.</summary>
    public IReadOnlyList<int> AsIntList(string task, string name, JsonNode node) =>
        node is JsonArray a
            ? a.Select((x, i) => x is null ? throw Bad(task, $"{name}[{i}]", "an integer", "null") : AsInt(task, $"{name}[{i}]", x)).ToArray()
            : throw Bad(task, name, "a list of integers", Describe(node));

    /// <summary>An error naming the field, the expected and the actual value.</summary>
    public InvalidDataException Bad(string task, string name, string expected, string actual) =>
        new($"{task}: {Location}: field '{name}' should be {expected}, found {actual}" +
            (actual.StartsWith("string \"[", StringComparison.Ordinal) || actual.StartsWith("string \"{", StringComparison.Ordinal)
                ? " (a CSV cell holding a list or object must be JSON, with double quotes: [\"a\", \"b\"])" : ""));

    private static string Describe(JsonNode? node)
    {
        if (node is null) return "null";
        var text = node.ToJsonString();
        var kind = node switch { JsonArray => "list", JsonObject => "object", _ => node.GetValueKind().ToString().ToLowerInvariant() };
        return $"{kind} {(text.Length > 60 ? text[..60] + "..." : text)}";
    }
}

/// <summary>Loads data files into <see cref="EvalRow"/>s by extension.</summary>
public static class DataFiles
{
    /// <summary>The extensions understood.</summary>
    public static IReadOnlyList<string> Extensions { get; } = [".json", ".jsonl", ".csv", ".parquet"];

    /// <summary>Reads the first <paramref name="limit"/> rows (all when null) of a .json/.jsonl/.csv/.parquet file.</summary>
    public static IReadOnlyList<EvalRow> Read(string path, int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (limit is < 0) throw new ArgumentOutOfRangeException(nameof(limit), limit, "limit must be non-negative");
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        var ext = Path.GetExtension(path).ToLowerInvariant();
        if (!Extensions.Contains(ext))
            throw new NotSupportedException($"{path}: unsupported data file extension '{ext}' (expected one of {string.Join(", ", Extensions)})");
        var rows = ReadRows(path);
        return (limit is { } n ? rows.Take(n) : rows).ToList();
    }

    /// <summary>Reads several files (shards of one split) in order, stopping after <paramref name="limit"/> rows in all.</summary>
    public static IReadOnlyList<EvalRow> Read(IReadOnlyList<string> paths, int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new ArgumentException("no data files given", nameof(paths));
        var rows = new List<EvalRow>();
        foreach (var path in paths)
        {
            var left = limit is { } n ? n - rows.Count : (int?)null;
            if (left <= 0) break;
            rows.AddRange(Read(path, left));
        }
        return rows;
    }

    // The one reader (Data/DataSources) gives each row as a JSON element with its file and row; evaluation wants a
    // JSON object, refuses a bad row at once (a training dataset skips it), and reads CSV cells that hold JSON arrays
    // or objects as JSON and dotted headers (mc1_targets.choices) as nested fields.
    private static IEnumerable<EvalRow> ReadRows(string path)
    {
        var csv = Path.GetExtension(path).Equals(".csv", StringComparison.OrdinalIgnoreCase);
        foreach (var row in DataSources.ReadRows([path]))
        {
            var where = $"{path} {(csv || path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? "line" : "row")} {row.Row}";
            if (DataSources.InvalidReason(row) is { } reason) throw new InvalidDataException($"{where}: {reason}");
            if (row.Values.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{where}: expected a JSON object, got {row.Values.ValueKind}");
            var fields = JsonObject.Create(row.Values)!;
            if (csv)
            {
                var nested = new JsonObject();
                foreach (var (name, value) in fields.ToList()) SetDotted(nested, name, CellValue(value!.GetValue<string>()));
                fields = nested;
            }
            yield return new EvalRow(fields, path, (int)row.Row);
        }
    }

    private static JsonNode? CellValue(string cell)
    {
        var t = cell.TrimStart();
        if (t.StartsWith('[') || t.StartsWith('{'))
        {
            try { return JsonNode.Parse(cell); }
            catch (JsonException) { /* plain text that happens to start with a bracket */ }
        }
        return JsonValue.Create(cell);
    }

    private static void SetDotted(JsonObject obj, string name, JsonNode? value)
    {
        var parts = name.Split('.');
        var target = obj;
        for (var i = 0; i < parts.Length - 1; i++)
        {
            if (target[parts[i]] is not JsonObject child)
            {
                child = new JsonObject();
                target[parts[i]] = child;
            }
            target = child;
        }
        target[parts[^1]] = value;
    }
}
