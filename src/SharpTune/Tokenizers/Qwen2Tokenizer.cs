// Qwen2 / Qwen2.5 (and Qwen3, which shares the BPE) tokenizer with the ChatML format, as torchtune's Qwen2Tokenizer
// (torchtune/models/qwen2/_tokenizer.py) and the HF Qwen2Tokenizer define them: NFC, byte-level BPE with single-digit
// splitting, "<|im_start|>role\ncontent<|im_end|>\n" per message. Loads vocab.json + merges.txt or tokenizer.json.
namespace SharpTune.Tokenizers;

/// <summary>Qwen2 family byte-level BPE tokenizer (151,643 ranks + special tokens from 151,643 up).</summary>
public sealed class Qwen2Tokenizer : IChatTokenizer, ITokenPieces
{
    /// <summary><c>&lt;|endoftext|&gt;</c>, used as padding.</summary>
    public const int EndOfTextId = 151_643;
    /// <summary><c>&lt;|im_start|&gt;</c>.</summary>
    public const int ImStartId = 151_644;
    /// <summary><c>&lt;|im_end|&gt;</c>, the end of a turn and the EOS of chat models.</summary>
    public const int ImEndId = 151_645;

    private readonly ByteLevelBpe _bpe;
    private readonly int[] _newline;
    private readonly TruncationType _truncation;

    private Qwen2Tokenizer(ByteLevelBpe bpe, int? maxSeqLen, TruncationType truncation, string source)
    {
        if (bpe.SpecialId("<|endoftext|>", source) != EndOfTextId || bpe.SpecialId("<|im_start|>", source) != ImStartId ||
            bpe.SpecialId("<|im_end|>", source) != ImEndId)
            throw new InvalidDataException($"{source}: expected <|endoftext|>={EndOfTextId}, <|im_start|>={ImStartId}, <|im_end|>={ImEndId}");
        if (maxSeqLen is < 1) throw new ArgumentOutOfRangeException(nameof(maxSeqLen), maxSeqLen, "max_seq_len must be positive");
        _bpe = bpe;
        _truncation = truncation;
        MaxSeqLen = maxSeqLen;
        _newline = [.. bpe.Encode("\n")];
    }

    /// <inheritdoc/>
    public int VocabSize => _bpe.VocabSize;
    /// <summary>Qwen2 has no beginning-of-sequence token: -1, and <see cref="Encode"/> ignores addBos.</summary>
    public int BosId => -1;
    /// <inheritdoc/>
    public int EosId => ImEndId;
    /// <inheritdoc/>
    public int PadId => EndOfTextId;
    /// <inheritdoc/>
    public IReadOnlyList<int> StopTokens { get; } = [ImEndId, EndOfTextId];
    /// <inheritdoc/>
    public int? MaxSeqLen { get; }

    /// <summary>Special token string to id, as loaded.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _bpe.SpecialTokens;

    /// <summary>Special tokens of Qwen2.5 (ids 151643..151664), used when no tokenizer_config.json lists them.</summary>
    public static IReadOnlyDictionary<string, int> DefaultSpecialTokens { get; } = new Dictionary<string, int>(StringComparer.Ordinal)
    {
        ["<|endoftext|>"] = 151_643, ["<|im_start|>"] = 151_644, ["<|im_end|>"] = 151_645,
        ["<|object_ref_start|>"] = 151_646, ["<|object_ref_end|>"] = 151_647, ["<|box_start|>"] = 151_648,
        ["<|box_end|>"] = 151_649, ["<|quad_start|>"] = 151_650, ["<|quad_end|>"] = 151_651,
        ["<|vision_start|>"] = 151_652, ["<|vision_end|>"] = 151_653, ["<|vision_pad|>"] = 151_654,
        ["<|image_pad|>"] = 151_655, ["<|video_pad|>"] = 151_656, ["<tool_call>"] = 151_657, ["</tool_call>"] = 151_658,
        ["<|fim_prefix|>"] = 151_659, ["<|fim_middle|>"] = 151_660, ["<|fim_suffix|>"] = 151_661,
        ["<|fim_pad|>"] = 151_662, ["<|repo_name|>"] = 151_663, ["<|file_sep|>"] = 151_664,
    };

    /// <summary>The same vocabulary with another sequence limit (no reload).</summary>
    /// <inheritdoc/>
    public IChatTokenizer? WithoutLimit() => WithMaxSeqLen(null);

    public Qwen2Tokenizer WithMaxSeqLen(int? maxSeqLen, TruncationType truncation = TruncationType.Right) =>
        new(_bpe, maxSeqLen, truncation, "Qwen2Tokenizer");

    /// <summary>
    /// Loads vocab.json + merges.txt; special tokens come from a tokenizer_config.json beside vocab.json when present,
    /// else <see cref="DefaultSpecialTokens"/>.
    /// </summary>
    public static Qwen2Tokenizer FromVocabMerges(string vocabPath, string mergesPath, int? maxSeqLen = null,
        TruncationType truncation = TruncationType.Right)
    {
        var file = HfTokenizerFiles.ReadVocabMerges(vocabPath, mergesPath);
        var config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(vocabPath))!, "tokenizer_config.json");
        var added = HfTokenizerFiles.ReadAddedTokensFromConfig(config);
        return Build(file, added.Count > 0 ? added : DefaultSpecialTokens, ByteLevelBpe.Qwen2Pattern, nfc: true, vocabPath, maxSeqLen, truncation);
    }

    /// <summary>Loads a Hugging Face tokenizer.json (Qwen2, Qwen2.5, Qwen3).</summary>
    public static Qwen2Tokenizer FromTokenizerJson(string path, int? maxSeqLen = null, TruncationType truncation = TruncationType.Right)
    {
        var file = HfTokenizerFiles.ReadTokenizerJson(path);
        return Build(file, file.AddedTokens, file.Pattern ?? ByteLevelBpe.Qwen2Pattern, file.Nfc, path, maxSeqLen, truncation);
    }

    private static Qwen2Tokenizer Build(BpeFile file, IReadOnlyDictionary<string, int> specials, string pattern, bool nfc,
        string source, int? maxSeqLen, TruncationType truncation)
    {
        ByteLevelBpe.CheckMergeOrder(file.Merges, file.Vocab, source);
        var ranks = file.Vocab.Select(kv => (ByteLevelBpe.UnicodeToBytes(kv.Key, source), kv.Value));
        var bpe = ByteLevelBpe.Create(ranks, pattern, specials, nfc, source);
        return new Qwen2Tokenizer(bpe, maxSeqLen, truncation, source);
    }

    /// <inheritdoc/>
    public bool IsSpecial(int id) => _bpe.IsSpecial(id);

    /// <inheritdoc/>
    public TokenPiece PieceOf(int id) => _bpe.PieceOf(id);

    /// <inheritdoc/>
    public bool NormalizesNfc => _bpe.Nfc;

    /// <inheritdoc/>
    public bool RewritesSpaces => false;

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true)
    {
        var body = _bpe.Encode(text);
        if (!addEos) return body;
        return [.. body, EosId];
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => _bpe.Decode(ids, skipSpecialTokens);

    /// <inheritdoc/>
    public TokenizedMessages TokenizeMessages(IReadOnlyList<Message> messages, bool addEos = true)
    {
        var tokens = new List<int>();
        var mask = new List<bool>();
        for (var i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            var ids = new List<int>();
            if (m.Role != "ipython")
            {
                ids.Add(ImStartId);
                ids.AddRange(_bpe.Encode(m.Role + "\n"));
            }
            ids.AddRange(_bpe.Encode(m.Content));
            // The final assistant turn is closed by the EOS (<|im_end|>) below rather than by its own footer.
            if (m.Role != "ipython" && (m.Role != "assistant" || i != messages.Count - 1))
            {
                ids.Add(ImEndId);
                ids.AddRange(_newline);
            }
            tokens.AddRange(ids);
            mask.AddRange(Enumerable.Repeat(m.Masked, ids.Count));
            if (MaxSeqLen is { } max && tokens.Count >= max && _truncation == TruncationType.Right) break; // left truncation needs the end
        }
        if (addEos)
        {
            tokens.Add(EosId);
            mask.Add(mask.Count > 0 && mask[^1]);
        }
        var t = tokens.ToArray();
        var k = mask.ToArray();
        if (MaxSeqLen is { } maxLen && t.Length > 0)
        {
            var lastMasked = k.Length > 0 && k[^1];
            t = Truncation.Truncate(t, maxLen, addEos ? EosId : null, _truncation);
            k = Truncation.Truncate(k, maxLen, addEos ? lastMasked : null, _truncation);
        }
        return new TokenizedMessages(t, k);
    }
}
