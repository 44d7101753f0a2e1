// Reads evaluation data from the forms datasets are distributed in: JSON (an array of objects), JSON Lines, CSV
// (header row; a cell holding a JSON array/object is parsed as JSON; dotted headers such as `mc1_targets.choices`
// nest) and Parquet (Hugging Face's dataset layout, nested structs and lists included). Every row becomes a JSON
// object that remembers its file and row number, so a task can name both in its error messages.
// References: Hugging Face datasets' parquet export (refs/convert/parquet); RFC 4180 (CSV).
using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Parquet.Serialization;

namespace SharpTune.Eval;

/// <summary>One record of a data file.</summary>
/// <param name="Fields">The record as a JSON object.</param>
/// <param name="File">The file it came from.</param>
/// <param name="Row">Its 1-based row (line for JSONL and CSV data rows, element for JSON, row for Parquet).</param>
public sealed record DataRow(JsonObject Fields, string File, int Row)
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

/// <summary>Loads data files into <see cref="DataRow"/>s by extension.</summary>
public static class DataFiles
{
    /// <summary>The extensions understood.</summary>
    public static IReadOnlyList<string> Extensions { get; } = [".json", ".jsonl", ".csv", ".parquet"];

    /// <summary>Reads the first <paramref name="limit"/> rows (all when null) of a .json/.jsonl/.csv/.parquet file.</summary>
    public static IReadOnlyList<DataRow> Read(string path, int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (limit is < 0) throw new ArgumentOutOfRangeException(nameof(limit), limit, "limit must be non-negative");
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        var ext = Path.GetExtension(path).ToLowerInvariant();
        IEnumerable<DataRow> rows = ext switch
        {
            ".jsonl" => ReadJsonLines(path),
            ".json" => ReadJson(path),
            ".csv" => ReadCsv(path),
            ".parquet" => ReadParquet(path),
            _ => throw new NotSupportedException(
                $"{path}: unsupported data file extension '{ext}' (expected one of {string.Join(", ", Extensions)})"),
        };
        return (limit is { } n ? rows.Take(n) : rows).ToList();
    }

    /// <summary>Reads several files (shards of one split) in order, stopping after <paramref name="limit"/> rows in all.</summary>
    public static IReadOnlyList<DataRow> Read(IReadOnlyList<string> paths, int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new ArgumentException("no data files given", nameof(paths));
        var rows = new List<DataRow>();
        foreach (var path in paths)
        {
            var left = limit is { } n ? n - rows.Count : (int?)null;
            if (left <= 0) break;
            rows.AddRange(Read(path, left));
        }
        return rows;
    }

    private static IEnumerable<DataRow> ReadJsonLines(string path)
    {
        var line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(text); }
            catch (JsonException e) { throw new InvalidDataException($"{path} line {line}: not valid JSON: {e.Message}", e); }
            yield return node is JsonObject o ? new DataRow(o, path, line)
                : throw new InvalidDataException($"{path} line {line}: expected a JSON object per line");
        }
    }

    private static IEnumerable<DataRow> ReadJson(string path)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
        if (node is not JsonArray array)
            throw new InvalidDataException($"{path}: expected a JSON array of objects (use .jsonl for one object per line)");
        for (var i = 0; i < array.Count; i++)
            yield return array[i] is JsonObject o ? new DataRow(o, path, i + 1)
                : throw new InvalidDataException($"{path}: element {i + 1} is not a JSON object");
    }

    private static IEnumerable<DataRow> ReadCsv(string path)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        var records = ParseCsv(reader).GetEnumerator();
        if (!records.MoveNext()) yield break;
        var header = records.Current.Fields;
        while (records.MoveNext())
        {
            var (fields, line) = records.Current;
            if (fields.Count == 1 && fields[0].Length == 0) continue; // blank line
            if (fields.Count != header.Count)
                throw new InvalidDataException($"{path} line {line}: {fields.Count} cells, header has {header.Count}");
            var obj = new JsonObject();
            for (var c = 0; c < header.Count; c++) SetDotted(obj, header[c], CellValue(fields[c]));
            yield return new DataRow(obj, path, line);
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

    /// <summary>RFC 4180 records with the line each starts on; quoted cells may hold commas, quotes ("") and newlines.</summary>
    private static IEnumerable<(List<string> Fields, int Line)> ParseCsv(TextReader reader)
    {
        var fields = new List<string>();
        var cell = new StringBuilder();
        var inQuotes = false;
        var line = 1;
        var recordLine = 1;
        int ch;
        while ((ch = reader.Read()) >= 0)
        {
            var c = (char)ch;
            if (inQuotes)
            {
                if (c == '"')
                {
                    if (reader.Peek() == '"') { reader.Read(); cell.Append('"'); }
                    else inQuotes = false;
                }
                else
                {
                    if (c == '\n') line++;
                    cell.Append(c);
                }
                continue;
            }
            switch (c)
            {
                case '"' when cell.Length == 0: inQuotes = true; break;
                case ',': fields.Add(cell.ToString()); cell.Clear(); break;
                case '\r': break;
                case '\n':
                    fields.Add(cell.ToString());
                    cell.Clear();
                    yield return (fields, recordLine);
                    fields = [];
                    line++;
                    recordLine = line;
                    break;
                default: cell.Append(c); break;
            }
        }
        if (inQuotes) throw new InvalidDataException($"CSV line {recordLine}: unterminated quoted cell");
        if (cell.Length > 0 || fields.Count > 0)
        {
            fields.Add(cell.ToString());
            yield return (fields, recordLine);
        }
    }

    private static IEnumerable<DataRow> ReadParquet(string path)
    {
        List<JsonObject> objects;
        try
        {
            using var stream = File.OpenRead(path);
            var result = ParquetSerializer.DeserializeUntypedAsync(stream).GetAwaiter().GetResult();
            objects = result.Data.Select(d => (JsonObject)ToJson(d)!).ToList();
        }
        catch (Exception e) when (e is not InvalidDataException)
        {
            throw new InvalidDataException($"{path}: cannot read as Parquet: {e.Message}", e);
        }
        for (var i = 0; i < objects.Count; i++) yield return new DataRow(objects[i], path, i + 1);
    }

    private static JsonNode? ToJson(object? value) => value switch
    {
        null => null,
        string s => JsonValue.Create(s),
        bool b => JsonValue.Create(b),
        int i => JsonValue.Create(i),
        long l => JsonValue.Create(l),
        short sh => JsonValue.Create(sh),
        byte by => JsonValue.Create(by),
        sbyte sb => JsonValue.Create(sb),
        ushort us => JsonValue.Create(us),
        uint ui => JsonValue.Create(ui),
        ulong ul => JsonValue.Create(ul),
        float f => JsonValue.Create(f),
        double d => JsonValue.Create(d),
        decimal m => JsonValue.Create(m),
        IDictionary<string, object> dict => new JsonObject(dict.Select(kv => KeyValuePair.Create(kv.Key, ToJson(kv.Value)))),
        IDictionary dict => new JsonObject(dict.Keys.Cast<object>().Select(k => KeyValuePair.Create(k.ToString() ?? "", ToJson(dict[k])))),
        byte[] bytes => JsonValue.Create(Convert.ToBase64String(bytes)),
        IEnumerable e => new JsonArray(e.Cast<object?>().Select(ToJson).ToArray()),
        _ => JsonValue.Create(Convert.ToString(value, CultureInfo.InvariantCulture)),
    };
}
