// Llama 3 / 3.1 / 3.2 tokenizer and chat format, as torchtune's Llama3Tokenizer
// (torchtune/models/llama3/_tokenizer.py) and Meta's llama-models tokenizer.py / chat_format.py define them:
// [BOS] <|start_header_id|>role<|end_header_id|>\n\n content.strip() <|eot_id|> ... [EOS].
// Loads HF tokenizer.json or Meta's tiktoken-format original/tokenizer.model.
namespace SharpTune.Tokenizers;

/// <summary>Llama 3 family byte-level BPE tokenizer (128,000 ranks + 256 special tokens).</summary>
public sealed class Llama3Tokenizer : IChatTokenizer, ITokenPieces
{
    /// <summary><c>&lt;|begin_of_text|&gt;</c>.</summary>
    public const int BeginOfTextId = 128_000;
    /// <summary><c>&lt;|end_of_text|&gt;</c>.</summary>
    public const int EndOfTextId = 128_001;
    /// <summary><c>&lt;|finetune_right_pad_id|&gt;</c>.</summary>
    public const int FinetuneRightPadId = 128_004;
    /// <summary><c>&lt;|start_header_id|&gt;</c>.</summary>
    public const int StartHeaderId = 128_006;
    /// <summary><c>&lt;|end_header_id|&gt;</c>.</summary>
    public const int EndHeaderId = 128_007;
    /// <summary><c>&lt;|eom_id|&gt;</c> (end of message, the turn continues with a tool call).</summary>
    public const int EomId = 128_008;
    /// <summary><c>&lt;|eot_id|&gt;</c> (end of turn).</summary>
    public const int EotId = 128_009;
    /// <summary><c>&lt;|python_tag|&gt;</c>.</summary>
    public const int PythonTagId = 128_010;

    private const int NumRanks = 128_000;
    private const int NumSpecial = 256;

    private readonly ByteLevelBpe _bpe;
    private readonly int[] _newlines;
    private readonly TruncationType _truncation;

    private Llama3Tokenizer(ByteLevelBpe bpe, int? maxSeqLen, TruncationType truncation, string source)
    {
        if (bpe.NumRanks != NumRanks)
            throw new InvalidDataException($"{source}: a Llama 3 tokenizer has {NumRanks} BPE tokens, found {bpe.NumRanks}");
        foreach (var id in new[] { BeginOfTextId, EndOfTextId, FinetuneRightPadId, StartHeaderId, EndHeaderId, EomId, EotId })
            if (!bpe.IsSpecial(id)) throw new InvalidDataException($"{source}: special token id {id} is missing");
        if (maxSeqLen is < 1) throw new ArgumentOutOfRangeException(nameof(maxSeqLen), maxSeqLen, "max_seq_len must be positive");
        _bpe = bpe;
        _truncation = truncation;
        MaxSeqLen = maxSeqLen;
        _newlines = [.. bpe.Encode("\n\n")];
    }

    /// <inheritdoc/>
    public int VocabSize => _bpe.VocabSize;
    /// <inheritdoc/>
    public int BosId => BeginOfTextId;
    /// <inheritdoc/>
    public int EosId => EndOfTextId;
    /// <inheritdoc/>
    public int PadId => FinetuneRightPadId;
    /// <inheritdoc/>
    public IReadOnlyList<int> StopTokens { get; } = [EndOfTextId, EomId, EotId];
    /// <inheritdoc/>
    public int? MaxSeqLen { get; }

    /// <summary>Special token string to id, as loaded.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens => _bpe.SpecialTokens;

    /// <summary>The same vocabulary with another sequence limit (no reload).</summary>
    /// <inheritdoc/>
    public IChatTokenizer? WithoutLimit() => WithMaxSeqLen(null);

    public Llama3Tokenizer WithMaxSeqLen(int? maxSeqLen, TruncationType truncation = TruncationType.Right) =>
        new(_bpe, maxSeqLen, truncation, "Llama3Tokenizer");

    /// <summary>Loads a Hugging Face tokenizer.json (Meta-Llama-3*, Llama-3.1*, Llama-3.2*).</summary>
    public static Llama3Tokenizer FromTokenizerJson(string path, int? maxSeqLen = null, TruncationType truncation = TruncationType.Right)
    {
        var file = HfTokenizerFiles.ReadTokenizerJson(path);
        ByteLevelBpe.CheckMergeOrder(file.Merges, file.Vocab, path);
        var ranks = file.Vocab.Select(kv => (ByteLevelBpe.UnicodeToBytes(kv.Key, path), kv.Value));
        var bpe = ByteLevelBpe.Create(ranks, file.Pattern ?? ByteLevelBpe.Llama3Pattern, file.AddedTokens, nfc: file.Nfc, path);
        return new Llama3Tokenizer(bpe, maxSeqLen, truncation, path);
    }

    /// <summary>Loads Meta's tiktoken-format <c>original/tokenizer.model</c>.</summary>
    public static Llama3Tokenizer FromTiktoken(string path, int? maxSeqLen = null, TruncationType truncation = TruncationType.Right)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        var ranks = HfTokenizerFiles.ReadTiktoken(path);
        var bpe = ByteLevelBpe.Create(ranks, ByteLevelBpe.Llama3Pattern, DefaultSpecialTokens(ranks.Count), nfc: false, path);
        return new Llama3Tokenizer(bpe, maxSeqLen, truncation, path);
    }

    /// <summary>The 256 special tokens Meta's tokenizer.py appends after the BPE ranks (Llama 3.1 names).</summary>
    public static IReadOnlyDictionary<string, int> DefaultSpecialTokens(int numRanks = NumRanks)
    {
        string[] named =
        [
            "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
            "<|eot_id|>", "<|python_tag|>",
        ];
        var d = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < NumSpecial; i++)
            d[i < named.Length ? named[i] : $"<|reserved_special_token_{i - named.Length + 2}|>"] = numRanks + i;
        return d;
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
        if (!addBos && !addEos) return body;
        var ids = new List<int>(body.Count + 2);
        if (addBos) ids.Add(BosId);
        ids.AddRange(body);
        if (addEos) ids.Add(EosId);
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => _bpe.Decode(ids, skipSpecialTokens);

    /// <summary>Tokens of one message: header, stripped content, and (when <paramref name="addEnd"/>) eot or eom.</summary>
    public List<int> TokenizeMessage(Message message, bool addEnd = true)
    {
        var ids = new List<int> { StartHeaderId };
        ids.AddRange(_bpe.Encode(message.Role.Trim()));
        ids.Add(EndHeaderId);
        ids.AddRange(_newlines);
        ids.AddRange(_bpe.Encode(message.Content.Trim()));
        if (addEnd) ids.Add(message.Eot ? EotId : EomId);
        return ids;
    }

    /// <inheritdoc/>
    public TokenizedMessages TokenizeMessages(IReadOnlyList<Message> messages, bool addEos = true)
    {
        var tokens = new List<int> { BosId };
        var mask = new List<bool> { true }; // BOS and EOS are always masked
        for (var i = 0; i < messages.Count; i++)
        {
            // Only the last message may go without its end-of-turn token (inference prompts).
            var message = TokenizeMessage(messages[i], addEnd: addEos || i < messages.Count - 1);
            tokens.AddRange(message);
            mask.AddRange(Enumerable.Repeat(messages[i].Masked, message.Count));
            if (MaxSeqLen is { } max && tokens.Count >= max && _truncation == TruncationType.Right) break; // left truncation needs the end
        }
        if (addEos)
        {
            tokens.Add(EosId);
            mask.Add(true);
        }
        var t = tokens.ToArray();
        var m = mask.ToArray();
        if (MaxSeqLen is { } maxLen)
        {
            t = Truncation.Truncate(t, maxLen, addEos ? EosId : null, _truncation);
            m = Truncation.Truncate(m, maxLen, addEos ? true : null, _truncation);
        }
        return new TokenizedMessages(t, m);
    }
}
