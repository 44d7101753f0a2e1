// Reading dataset rows from local files as Hugging Face `datasets.load_dataset` would (json/jsonl/csv/parquet, a file
// or a folder of shards; a plain .txt file is one row whose "text" is the whole file), and resolving a hub dataset id to a local folder through a pluggable resolver.
// Every row keeps its file and row number so that bad rows can be reported precisely.
using System.Text;
using System.Text.Json;
using Parquet.Serialization;

namespace SharpTune.Data;

/// <summary>Maps a Hugging Face datasets hub id (e.g. <c>yahma/alpaca-cleaned</c>) to a local folder holding its files.</summary>
public interface IDatasetSourceResolver
{
    /// <summary>Returns the local folder for <paramref name="datasetId"/> (downloading it if needed).</summary>
    string Resolve(string datasetId, string? split);
}

/// <summary>One row of a dataset file.</summary>
/// <param name="Values">The row as a JSON object (CSV and Parquet rows are converted).</param>
/// <param name="File">The file it came from.</param>
/// <param name="Row">1-based row number within the file (line number for JSON Lines and CSV).</param>
public sealed record DataRow(JsonElement Values, string File, long Row)
{
    /// <summary>"file row N", for messages.</summary>
    public string Where => $"{File} row {Row}";
}

/// <summary>A row that cannot be used, with where it is and why.</summary>
public sealed class BadRowException(string file, long row, string reason)
    : Exception($"{file} row {row}: {reason}")
{
    /// <summary>The file holding the row.</summary>
    public string File { get; } = file;

    /// <summary>1-based row (or line) number.</summary>
    public long Row { get; } = row;

    /// <summary>What is wrong.</summary>
    public string Reason { get; } = reason;
}

/// <summary>Finds and reads the rows of a dataset source.</summary>
public static class DataSources
{
    private static readonly string[] s_extensions = [".json", ".jsonl", ".csv", ".parquet", ".txt"];

    /// <summary>The data file types <see cref="ReadRows"/> reads.</summary>
    public static IReadOnlyList<string> Extensions => s_extensions;

    private static readonly AsyncLocal<IDatasetSourceResolver?> s_resolver = new();

    /// <summary>
    /// The resolver for hub ids when a builder is given none, within the current call context (its async flow, not
    /// the process): what <see cref="UseResolver"/> set, or null, which rejects hub ids with a clear error.
    /// </summary>
    public static IDatasetSourceResolver? CurrentResolver => s_resolver.Value;

    /// <summary>
    /// Resolves hub ids through <paramref name="resolver"/> for the calls made in this context (and the tasks it
    /// starts) until the returned scope is disposed, which restores the previous one. The CLI wraps each command in one;
    /// two hosts in one process (or two tests) do not see each other's.
    /// </summary>
    public static IDisposable UseResolver(IDatasetSourceResolver? resolver)
    {
        var previous = s_resolver.Value;
        s_resolver.Value = resolver;
        return new ResolverScope(previous);
    }

    private sealed class ResolverScope(IDatasetSourceResolver? previous) : IDisposable
    {
        public void Dispose() => s_resolver.Value = previous;
    }

    /// <summary>
    /// Lists the data files of <paramref name="source"/>: a local file, a local folder (files whose name contains
    /// <paramref name="split"/> are preferred when there are such), the format names "json"/"csv"/"parquet" with
    /// <paramref name="dataFiles"/>, or a hub id through <paramref name="resolver"/>.
    /// </summary>
    public static IReadOnlyList<string> ResolveFiles(string source, string? dataFiles = null, string? split = "train",
        IDatasetSourceResolver? resolver = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(source);
        if (source is "json" or "csv" or "parquet" or "text")
        {
            if (string.IsNullOrWhiteSpace(dataFiles))
                throw new ArgumentException($"source '{source}' needs data_files (a file or folder)", nameof(dataFiles));
            return FilesAt(dataFiles, split);
        }
        if (File.Exists(source) || Directory.Exists(source)) return FilesAt(source, split);
        if (LooksLikeLocalPath(source)) throw new FileNotFoundException($"dataset source not found: {source}", source);
        var r = resolver ?? CurrentResolver ?? throw new InvalidOperationException(
            $"dataset source '{source}' is not a local file or folder, and no Hub resolver is configured to download it; download it first or pass a local path");
        var folder = r.Resolve(source, split);
        return FilesAt(dataFiles is null ? folder : Path.Combine(folder, dataFiles), split);
    }

    /// <summary>Reads every row of <paramref name="files"/> in order.</summary>
    public static IEnumerable<DataRow> ReadRows(IEnumerable<string> files)
    {
        foreach (var file in files)
        {
            var rows = Path.GetExtension(file).ToLowerInvariant() switch
            {
                ".jsonl" => ReadJsonLines(file),
                ".json" => ReadJson(file),
                ".csv" => ReadCsv(file),
                ".parquet" => ReadParquet(file),
                ".txt" => ReadText(file),
                _ => Unsupported(file),
            };
            foreach (var row in rows) yield return row;
        }
    }

    private static IEnumerable<DataRow> Unsupported(string file)
    {
        CheckFileType(file);
        return [];
    }

    private static bool LooksLikeLocalPath(string s) =>
        s.StartsWith('/') || s.StartsWith('.') || s.StartsWith('~') || s.Contains('\\') ||
        s_extensions.Any(e => s.EndsWith(e, StringComparison.OrdinalIgnoreCase)) || s.Count(c => c == '/') != 1;

    private static IReadOnlyList<string> FilesAt(string path, string? split)
    {
        if (File.Exists(path)) return [path];
        if (!Directory.Exists(path)) throw new FileNotFoundException($"dataset path not found: {path}", path);
        var all = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Where(f => s_extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .Where(f => !Path.GetFileName(f).StartsWith('.'))
            .Where(f => Path.GetFileName(f) != "original_repo_id.json") // the marker `download` and the Hub resolver write
            .OrderBy(f => f, NaturalComparer.Instance)
            .ToList();
        // Plain text is the folder's data only when it has no structured files: a dataset folder's SOURCE.txt or
        // README.txt is documentation, not a row.
        if (all.Any(f => !f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase)))
            all = all.Where(f => !f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase)).ToList();
        if (all.Count == 0) throw new FileNotFoundException($"{path}: no {string.Join(", ", s_extensions)} files in this folder", path);
        if (split is not null)
        {
            var forSplit = all.Where(f => Path.GetRelativePath(path, f).Contains(split, StringComparison.OrdinalIgnoreCase)).ToList();
            if (forSplit.Count > 0) return forSplit;
        }
        return all;
    }

    /// <summary>
    /// Throws when <paramref name="file"/> has no readable extension (named with the ones that are), so that a config
    /// can be refused by <c>validate</c> before a run starts rather than at its first read.
    /// </summary>
    public static void CheckFileType(string file)
    {
        var ext = Path.GetExtension(file).ToLowerInvariant();
        if (!s_extensions.Contains(ext))
            throw new NotSupportedException($"{file}: unsupported data file type '{ext}' (expected {string.Join(", ", s_extensions)})");
    }

    // A plain-text file is one document: one row {"text": whole file}, invalid UTF-8 reported as a bad row.
    private static IEnumerable<DataRow> ReadText(string file)
    {
        string text;
        try { text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(file)); }
        catch (DecoderFallbackException) { return [new DataRow(Invalid("invalid UTF-8"), file, 1)]; }
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..]; // a byte-order mark is not text
        return [new DataRow(JsonSerializer.SerializeToElement(new Dictionary<string, string> { ["text"] = text }), file, 1)];
    }

    private static IEnumerable<DataRow> ReadJson(string file)
    {
        JsonDocument doc;
        try
        {
            using var s = File.OpenRead(file);
            doc = JsonDocument.Parse(s);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file}: invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1} ({e.Message})", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.EnumerateObject().Count() == 1 &&
                root.EnumerateObject().First().Value.ValueKind == JsonValueKind.Array)
                root = root.EnumerateObject().First().Value; // {"data": [...]} / {"train": [...]}
            if (root.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{file}: expected a JSON array of rows, got {root.ValueKind}");
            var n = 0L;
            foreach (var e in root.EnumerateArray()) yield return new DataRow(e.Clone(), file, ++n);
        }
    }

    private static IEnumerable<DataRow> ReadJsonLines(string file)
    {
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        var n = 0L;
        foreach (var raw in ReadRawLines(file))
        {
            n++;
            if (raw.AsSpan().Trim((byte)' ').Length == 0 || (raw.Length == 1 && raw[0] == '\r')) continue;
            JsonElement e;
            try
            {
                utf8.GetCharCount(raw);
                using var d = JsonDocument.Parse(raw);
                e = d.RootElement.Clone();
            }
            catch (DecoderFallbackException) { e = Invalid("invalid UTF-8"); }
            catch (JsonException ex) { e = Invalid($"invalid JSON ({ex.Message})"); }
            yield return new DataRow(e, file, n);
        }
    }

    private static IEnumerable<DataRow> ReadCsv(string file)
    {
        // RFC 4180: comma separated, header row, fields may be quoted with "" escapes and may span lines.
        var bytes = File.ReadAllBytes(file);
        string text;
        try { text = new UTF8Encoding(false, true).GetString(bytes); }
        catch (DecoderFallbackException) { text = ""; }
        if (text.Length == 0 && bytes.Length > 0) { foreach (var r in ReadCsvLossy(file, bytes)) yield return r; yield break; }
        foreach (var r in ParseCsv(text, file)) yield return r;
    }

    private static IEnumerable<DataRow> ReadCsvLossy(string file, byte[] bytes)
    {
        // Parse with replacement characters, then report rows whose raw bytes were not valid UTF-8.
        var text = Encoding.UTF8.GetString(bytes);
        foreach (var r in ParseCsv(text, file))
            yield return r.Values.ValueKind == JsonValueKind.Object && r.Values.ToString().Contains('\uFFFD')
                ? r with { Values = Invalid("invalid UTF-8") } : r;
    }

    private static IEnumerable<DataRow> ParseCsv(string text, string file)
    {
        string[]? header = null;
        var fields = new List<string>();
        var field = new StringBuilder();
        var line = 1L;
        var rowStart = 1L;
        var i = 0;
        var inQuotes = false;
        while (i <= text.Length)
        {
            var end = i == text.Length;
            var c = end ? '\n' : text[i];
            if (inQuotes && !end)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i += 2; continue; }
                if (c == '"') { inQuotes = false; i++; continue; }
                if (c == '\n') line++;
                field.Append(c); i++; continue;
            }
            if (c == '"' && field.Length == 0) { inQuotes = true; i++; continue; }
            if (c == ',') { fields.Add(field.ToString()); field.Clear(); i++; continue; }
            if (c == '\r' && i + 1 < text.Length && text[i + 1] == '\n') { i++; continue; }
            if (c == '\n')
            {
                fields.Add(field.ToString()); field.Clear();
                var blank = fields.Count == 1 && fields[0].Length == 0;
                if (!blank)
                {
                    if (header is null) header = [.. fields];
                    else
                    {
                        JsonElement values;
                        if (fields.Count != header.Length)
                            values = Invalid($"has {fields.Count} fields, the header has {header.Length}");
                        else
                        {
                            var obj = new Dictionary<string, string>(header.Length);
                            for (var k = 0; k < header.Length; k++) obj[header[k]] = fields[k];
                            values = JsonSerializer.SerializeToElement(obj);
                        }
                        yield return new DataRow(values, file, rowStart);
                    }
                }
                fields.Clear();
                i++;
                line++;
                rowStart = line;
                if (end) break;
                continue;
            }
            field.Append(c); i++;
        }
        if (header is null) throw new InvalidDataException($"{file}: empty CSV file (no header row)");
    }

    private static IEnumerable<DataRow> ReadParquet(string file)
    {
        using var s = File.OpenRead(file);
        var result = ParquetSerializer.DeserializeUntypedAsync(s).GetAwaiter().GetResult();
        var n = 0L;
        foreach (var row in result.Data)
            yield return new DataRow(JsonSerializer.SerializeToElement(ToPlain(row)), file, ++n);
    }

    private static object? ToPlain(object? v) => v switch
    {
        null => null,
        string or bool or int or long or float or double or decimal or short or byte or sbyte or ushort or uint or ulong => v,
        byte[] bytes => Convert.ToBase64String(bytes), // binary columns, as JSON carries them
        IDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => ToPlain(kv.Value)),
        System.Collections.IDictionary d => d.Keys.Cast<object>().ToDictionary(k => k.ToString()!, k => ToPlain(d[k])),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(ToPlain).ToList(),
        _ => v.ToString(),
    };

    private static IEnumerable<byte[]> ReadRawLines(string file)
    {
        var bytes = File.ReadAllBytes(file);
        var start = 0;
        for (var i = 0; i <= bytes.Length; i++)
        {
            if (i < bytes.Length && bytes[i] != (byte)'\n') continue;
            if (i == bytes.Length && start == i) break;
            yield return bytes[start..i];
            start = i + 1;
        }
    }

    /// <summary>Why <paramref name="row"/> could not be read (invalid JSON or UTF-8, a CSV row of the wrong width), or null.</summary>
    public static string? InvalidReason(DataRow row) =>
        row.Values.ValueKind == JsonValueKind.Object && row.Values.TryGetProperty(InvalidKey, out var reason) ? reason.GetString() : null;

    /// <summary>A marker row value for rows that failed to parse; transforms report it as a bad row.</summary>
    internal static JsonElement Invalid(string reason) =>
        JsonSerializer.SerializeToElement(new Dictionary<string, string> { [InvalidKey] = reason });

    internal const string InvalidKey = "\u0000invalid";

    private sealed class NaturalComparer : IComparer<string>
    {
        public static readonly NaturalComparer Instance = new();

        // Orders shard_2 before shard_10, as users expect of numbered shards.
        public int Compare(string? x, string? y)
        {
            if (x is null || y is null) return string.CompareOrdinal(x, y);
            int i = 0, j = 0;
            while (i < x.Length && j < y.Length)
            {
                if (char.IsAsciiDigit(x[i]) && char.IsAsciiDigit(y[j]))
                {
                    var si = i; while (i < x.Length && char.IsAsciiDigit(x[i])) i++;
                    var sj = j; while (j < y.Length && char.IsAsciiDigit(y[j])) j++;
                    var a = x[si..i].TrimStart('0'); var b = y[sj..j].TrimStart('0');
                    var c = a.Length != b.Length ? a.Length.CompareTo(b.Length) : string.CompareOrdinal(a, b);
                    if (c != 0) return c;
                    continue;
                }
                if (x[i] != y[j]) return x[i].CompareTo(y[j]);
                i++; j++;
            }
            return (x.Length - i).CompareTo(y.Length - j);
        }
    }
}
