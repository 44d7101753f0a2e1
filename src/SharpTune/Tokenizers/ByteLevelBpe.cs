// Byte-level BPE (GPT-2 / tiktoken family: Llama 3, Qwen2) on top of Microsoft.ML.Tokenizers' TiktokenTokenizer.
// HF tokenizer.json / vocab.json store tokens in GPT-2's byte-to-unicode alphabet (openai/gpt-2 encoder.py
// bytes_to_unicode); tiktoken files store base64 bytes with their rank. For these vocabularies the merge order equals
// the id order, so tiktoken's "merge the lowest-ranked adjacent pair" gives Hugging Face's ids; the loaders check that
// property on the merges they are given. Special tokens are kept out of the TiktokenTokenizer so that their strings in
// user text stay plain text; we insert and decode them ourselves.
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace SharpTune.Tokenizers;

/// <summary>A byte-level BPE encoder/decoder with a separate table of special tokens.</summary>
public sealed class ByteLevelBpe
{
    /// <summary>Llama 3 pre-tokenizer split pattern (tokenizer.json pre_tokenizer.Split.pattern.Regex).</summary>
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2 pre-tokenizer split pattern (digits one at a time).</summary>
    public const string Qwen2Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static readonly char[] s_byteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> s_charToByte = BuildCharToByte();

    private readonly TiktokenTokenizer _tiktoken;
    private readonly Dictionary<int, string> _specialById;
    private readonly byte[][] _rankBytes;
    private readonly bool _nfc;

    private ByteLevelBpe(TiktokenTokenizer tiktoken, byte[][] rankBytes, IReadOnlyDictionary<string, int> specials, bool nfc)
    {
        _tiktoken = tiktoken;
        _rankBytes = rankBytes;
        NumRanks = rankBytes.Length;
        _specialById = specials.ToDictionary(kv => kv.Value, kv => kv.Key);
        SpecialTokens = specials;
        _nfc = nfc;
        VocabSize = Math.Max(NumRanks, specials.Count == 0 ? 0 : specials.Values.Max() + 1);
    }

    /// <summary>Number of BPE ranks (ordinary tokens), ids 0..NumRanks-1.</summary>
    public int NumRanks { get; }

    /// <summary>Ordinary tokens plus special tokens (max id + 1).</summary>
    public int VocabSize { get; }

    /// <summary>Special token string to id.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>True when <paramref name="id"/> is a special token.</summary>
    public bool IsSpecial(int id) => _specialById.ContainsKey(id);

    /// <summary>Id of a special token, with a clear error when the vocabulary lacks it.</summary>
    public int SpecialId(string token, string source) => SpecialTokens.TryGetValue(token, out var id) ? id
        : throw new InvalidDataException($"{source}: special token '{token}' is missing");

    /// <summary>What one id stands for: its bytes (an ordinary token), a special token (no text), or nothing
    /// (an id in no table, e.g. a gap among the special ids).</summary>
    public TokenPiece PieceOf(int id)
    {
        if ((uint)id < (uint)NumRanks) return TokenPiece.Text(_rankBytes[id]);
        if (_specialById.TryGetValue(id, out var special)) return TokenPiece.Special(special);
        return TokenPiece.Unused;
    }

    /// <summary>Whether this tokenizer NFC-normalises text before encoding (Qwen2); offsets then refer to the
    /// normalised text.</summary>
    public bool Nfc => _nfc;

    /// <summary>Encodes text as ordinary tokens (special-token strings are plain text).</summary>
    public IReadOnlyList<int> Encode(string text) =>
        text.Length == 0 ? [] : _tiktoken.EncodeToIds(_nfc ? UnicodeNfc.Normalize(text) : text);

    /// <summary>Decodes ids; special ids become their strings unless skipped.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        var sb = new StringBuilder();
        var run = new List<int>();
        foreach (var id in ids)
        {
            if (_specialById.TryGetValue(id, out var special))
            {
                Flush();
                if (!skipSpecialTokens) sb.Append(special);
                continue;
            }
            if ((uint)id >= (uint)NumRanks)
                throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary (0..{VocabSize - 1})");
            run.Add(id);
        }
        Flush();
        return sb.ToString();

        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(_tiktoken.Decode(run));
            run.Clear();
        }
    }

    /// <summary>Builds from (token bytes, rank) pairs; ranks must be 0..n-1 without gaps.</summary>
    public static ByteLevelBpe Create(IEnumerable<(byte[] Bytes, int Rank)> ranks, string pattern,
        IReadOnlyDictionary<string, int> specials, bool nfc, string source)
    {
        // TiktokenTokenizer reads the tiktoken text format: "<base64 bytes> <rank>" per line.
        var text = new StringBuilder(1 << 22);
        var count = 0;
        var byRank = new Dictionary<int, byte[]>();
        foreach (var (bytes, rank) in ranks)
        {
            if (!byRank.TryAdd(rank, bytes)) throw new InvalidDataException($"{source}: rank {rank} appears twice");
            text.Append(Convert.ToBase64String(bytes)).Append(' ').Append(rank).Append('\n');
            count++;
        }
        var rankBytes = new byte[count][];
        for (var i = 0; i < count; i++)
            rankBytes[i] = byRank.TryGetValue(i, out var b) ? b
                : throw new InvalidDataException($"{source}: ranks must be 0..{count - 1}, rank {i} is missing");
        foreach (var (name, id) in specials)
            if (id < count) throw new InvalidDataException($"{source}: special token '{name}' has id {id}, inside the BPE ranks (0..{count - 1})");
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text.ToString()));
        var pre = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), null);
        var tiktoken = TiktokenTokenizer.Create(stream, pre, normalizer: null, specialTokens: null);
        return new ByteLevelBpe(tiktoken, rankBytes, specials, nfc);
    }

    /// <summary>Bytes of a token written in GPT-2's byte-to-unicode alphabet.</summary>
    public static byte[] UnicodeToBytes(string token, string source)
    {
        var bytes = new byte[token.Length];
        for (var i = 0; i < token.Length; i++)
            bytes[i] = s_charToByte.TryGetValue(token[i], out var b) ? b
                : throw new InvalidDataException($"{source}: token '{token}' has character U+{(int)token[i]:X4}, not in the byte-level alphabet");
        return bytes;
    }

    /// <summary>A token's bytes written in GPT-2's byte-to-unicode alphabet.</summary>
    public static string BytesToUnicode(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (var i = 0; i < bytes.Length; i++) chars[i] = s_byteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>
    /// Checks that BPE merges are in non-decreasing order of the merged token's id, the property that makes
    /// rank-by-id (tiktoken) merging equal to merge-list (Hugging Face) merging.
    /// </summary>
    public static void CheckMergeOrder(IEnumerable<(string Left, string Right)> merges, IReadOnlyDictionary<string, int> vocab, string source)
    {
        var previous = -1;
        var line = 0;
        foreach (var (left, right) in merges)
        {
            line++;
            if (!vocab.TryGetValue(left + right, out var id))
                throw new InvalidDataException($"{source}: merge {line} '{left} {right}' produces a token that is not in the vocabulary");
            if (id < previous)
                throw new NotSupportedException(
                    $"{source}: merge {line} '{left} {right}' yields id {id} after a merge that yielded {previous}; this loader needs merges in id order (tiktoken-style vocabularies such as Llama 3 and Qwen2)");
            previous = id;
        }
    }

    private static char[] BuildByteToChar()
    {
        // GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 upwards.
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var d = new Dictionary<char, byte>(256);
        for (var b = 0; b < 256; b++) d[s_byteToChar[b]] = (byte)b;
        return d;
    }
}
