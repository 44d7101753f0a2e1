// Readers for the tokenizer files models ship: Hugging Face tokenizer.json (model.vocab/merges, added_tokens,
// normalizer, pre_tokenizer), GPT-2 style vocab.json + merges.txt, and Meta's tiktoken-format original/tokenizer.model
// (one "<base64 token> <rank>" per line; meta-llama/llama3 llama/tokenizer.py).
using System.Text;
using System.Text.Json;

namespace SharpTune.Tokenizers;

/// <summary>The parts of a byte-level BPE tokenizer file that SharpTune uses.</summary>
/// <param name="Vocab">Token (byte-level alphabet) to id.</param>
/// <param name="Merges">BPE merges in priority order (may be empty for tiktoken files).</param>
/// <param name="AddedTokens">Added/special token content to id.</param>
/// <param name="Pattern">The pre-tokenizer split regex, or null when the file has none.</param>
/// <param name="Nfc">True when the file's normalizer is NFC.</param>
internal sealed record BpeFile(
    Dictionary<string, int> Vocab, List<(string Left, string Right)> Merges,
    Dictionary<string, int> AddedTokens, string? Pattern, bool Nfc);

internal static class HfTokenizerFiles
{
    /// <summary>Reads a Hugging Face tokenizer.json with a byte-level BPE model.</summary>
    public static BpeFile ReadTokenizerJson(string path)
    {
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: no 'model' object; not a Hugging Face tokenizer.json");
        var type = model.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type != "BPE")
            throw new NotSupportedException($"{path}: model.type is '{type}', expected 'BPE'");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new NotSupportedException($"{path}: a SentencePiece-style BPE (byte_fallback) tokenizer.json; load the tokenizer.model beside it instead");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in model.GetProperty("vocab").EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var m))
            foreach (var e in m.EnumerateArray())
                merges.Add(e.ValueKind == JsonValueKind.String ? SplitMerge(e.GetString()!, path, merges.Count + 1)
                    : (e[0].GetString()!, e[1].GetString()!));

        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var at))
            foreach (var e in at.EnumerateArray()) added[e.GetProperty("content").GetString()!] = e.GetProperty("id").GetInt32();

        var nfc = root.TryGetProperty("normalizer", out var norm) && ContainsType(norm, "NFC");
        string? pattern = null;
        if (root.TryGetProperty("pre_tokenizer", out var pre)) pattern = FindSplitRegex(pre);
        return new BpeFile(vocab, merges, added, pattern, nfc);
    }

    /// <summary>Reads GPT-2 style vocab.json + merges.txt (first line may be "#version: ...").</summary>
    public static BpeFile ReadVocabMerges(string vocabPath, string mergesPath)
    {
        using var doc = ParseJson(vocabPath);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{vocabPath}: expected a JSON object of token -> id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        if (!File.Exists(mergesPath)) throw new FileNotFoundException($"merges file not found: {mergesPath}", mergesPath);
        var merges = new List<(string, string)>();
        var lineNo = 0;
        foreach (var line in File.ReadLines(mergesPath, Encoding.UTF8))
        {
            lineNo++;
            if (line.Length == 0 || (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            merges.Add(SplitMerge(line, mergesPath, lineNo));
        }
        return new BpeFile(vocab, merges, new Dictionary<string, int>(StringComparer.Ordinal), null, Nfc: false);
    }

    /// <summary>Reads a tiktoken BPE file: "&lt;base64&gt; &lt;rank&gt;" per line.</summary>
    public static List<(byte[] Bytes, int Rank)> ReadTiktoken(string path)
    {
        var result = new List<(byte[], int)>(128_000);
        var lineNo = 0;
        foreach (var line in File.ReadLines(path, Encoding.ASCII))
        {
            lineNo++;
            if (line.Length == 0) continue;
            var space = line.IndexOf(' ');
            if (space <= 0 || !int.TryParse(line.AsSpan(space + 1), out var rank))
                throw new InvalidDataException($"{path}:{lineNo}: expected '<base64 token> <rank>', got '{Shorten(line)}'");
            byte[] bytes;
            try { bytes = Convert.FromBase64String(line[..space]); }
            catch (FormatException) { throw new InvalidDataException($"{path}:{lineNo}: '{Shorten(line[..space])}' is not base64"); }
            result.Add((bytes, rank));
        }
        return result;
    }

    /// <summary>True when the first bytes look like a tiktoken text file rather than a SentencePiece protobuf.</summary>
    public static bool LooksLikeTiktoken(string path)
    {
        using var f = File.OpenRead(path);
        var buf = new byte[256];
        var n = f.Read(buf, 0, buf.Length);
        var newline = Array.IndexOf(buf, (byte)'\n', 0, n);
        if (newline <= 0) return false;
        var line = Encoding.ASCII.GetString(buf, 0, newline);
        var space = line.IndexOf(' ');
        if (space <= 0 || !int.TryParse(line.AsSpan(space + 1), out _)) return false;
        foreach (var c in line[..space])
            if (!(char.IsAsciiLetterOrDigit(c) || c is '+' or '/' or '=')) return false;
        return true;
    }

    /// <summary>Reads tokenizer_config.json's added_tokens_decoder (id -> content) when the file exists.</summary>
    public static Dictionary<string, int> ReadAddedTokensFromConfig(string configPath)
    {
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (!File.Exists(configPath)) return added;
        using var doc = ParseJson(configPath);
        if (doc.RootElement.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
            foreach (var p in dec.EnumerateObject())
            {
                if (!int.TryParse(p.Name, out var id))
                    throw new InvalidDataException($"{configPath}: added_tokens_decoder key '{p.Name}' is not an integer id");
                added[p.Value.GetProperty("content").GetString()!] = id;
            }
        return added;
    }

    internal static JsonDocument ParseJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        try
        {
            using var s = File.OpenRead(path);
            return JsonDocument.Parse(s, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: invalid JSON at line {e.LineNumber + 1}: {e.Message}", e);
        }
    }

    private static (string, string) SplitMerge(string line, string path, int lineNo)
    {
        var space = line.IndexOf(' ');
        if (space <= 0 || space == line.Length - 1)
            throw new InvalidDataException($"{path}: merge {lineNo} '{Shorten(line)}' is not '<left> <right>'");
        return (line[..space], line[(space + 1)..]);
    }

    private static bool ContainsType(JsonElement e, string type)
    {
        if (e.ValueKind != JsonValueKind.Object) return false;
        if (e.TryGetProperty("type", out var t) && t.GetString() == type) return true;
        if (e.TryGetProperty("normalizers", out var list))
            foreach (var x in list.EnumerateArray()) if (ContainsType(x, type)) return true;
        return false;
    }

    private static string? FindSplitRegex(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) return null;
        if (e.TryGetProperty("type", out var t) && t.GetString() == "Split" &&
            e.TryGetProperty("pattern", out var p) && p.TryGetProperty("Regex", out var r))
            return r.GetString();
        if (e.TryGetProperty("pretokenizers", out var list))
            foreach (var x in list.EnumerateArray())
                if (FindSplitRegex(x) is { } found) return found;
        return null;
    }

    private static string Shorten(string s) => s.Length <= 60 ? s : s[..60] + "...";
}
