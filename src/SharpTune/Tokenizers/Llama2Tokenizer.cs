// SentencePiece tokenizer for Llama 2 style models (Llama 2, TinyLlama, llama2.c's stories models), as torchtune's
// Llama2Tokenizer / SentencePieceBaseTokenizer (torchtune/models/llama2/_tokenizer.py,
// torchtune/modules/transforms/tokenizers/_sentencepiece.py) use it, with the optional [INST] chat template of
// torchtune's Llama2ChatTemplate (torchtune/models/llama2/_prompt_template.py). Backed by SentencePieceBpe (see there
// why not Microsoft.ML.Tokenizers' LlamaTokenizer).

namespace SharpTune.Tokenizers;

/// <summary>SentencePiece BPE tokenizer with BOS/EOS per turn and the optional Llama 2 [INST] format.</summary>
public sealed class Llama2Tokenizer : IChatTokenizer, ITokenPieces
{
    private readonly SentencePieceBpe _sp;
    private readonly int _prefixLength;
    private readonly TruncationType _truncation;
    private readonly bool _chatTemplate;

    private Llama2Tokenizer(SentencePieceBpe sp, int? maxSeqLen, TruncationType truncation, bool chatTemplate)
    {
        if (maxSeqLen is < 1) throw new ArgumentOutOfRangeException(nameof(maxSeqLen), maxSeqLen, "max_seq_len must be positive");
        _sp = sp;
        _truncation = truncation;
        _chatTemplate = chatTemplate;
        MaxSeqLen = maxSeqLen;
        VocabSize = sp.VocabSize;
        // torchtune trims the dummy-prefix space of a continuation by encoding "\n" + text and dropping "\n"'s ids.
        _prefixLength = sp.Encode("\n").Count;
        StopTokens = [EosId];
    }

    /// <inheritdoc/>
    public int VocabSize { get; }
    /// <inheritdoc/>
    public int BosId => _sp.BosId;
    /// <inheritdoc/>
    public int EosId => _sp.EosId;
    /// <summary>The model's pad piece; Llama models define none, and then id 0 (&lt;unk&gt;) pads, as torchtune's Llama 2 recipes do.</summary>
    public int PadId => _sp.PadId >= 0 ? _sp.PadId : 0;
    /// <inheritdoc/>
    public IReadOnlyList<int> StopTokens { get; }
    /// <inheritdoc/>
    public int? MaxSeqLen { get; }

    /// <summary>The SentencePiece model underneath.</summary>
    public SentencePieceBpe Model => _sp;

    /// <summary>Piece string (with U+2581 for spaces) to id.</summary>
    public IReadOnlyDictionary<string, int> Vocabulary => _sp.Vocabulary;

    /// <summary>The same model with another sequence limit (no reload).</summary>
    /// <inheritdoc/>
    public IChatTokenizer? WithoutLimit() => WithMaxSeqLen(null);

    public Llama2Tokenizer WithMaxSeqLen(int? maxSeqLen, TruncationType truncation = TruncationType.Right) =>
        new(_sp, maxSeqLen, truncation, _chatTemplate);

    /// <summary>
    /// Loads a SentencePiece <c>tokenizer.model</c>. <paramref name="promptTemplate"/> "llama2_chat" applies the
    /// [INST] / &lt;&lt;SYS&gt;&gt; format in <see cref="TokenizeMessages"/>; null leaves messages as they are (torchtune's default).
    /// </summary>
    public static Llama2Tokenizer FromModel(string path, int? maxSeqLen = null, TruncationType truncation = TruncationType.Right,
        string? promptTemplate = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        var chat = promptTemplate switch
        {
            null or "" => false,
            "llama2_chat" or "sharptune.models.llama2.Llama2ChatTemplate" => true,
            _ => throw new ArgumentException($"prompt_template '{promptTemplate}' is not known; expected 'llama2_chat' or none", nameof(promptTemplate)),
        };
        return new Llama2Tokenizer(SentencePieceBpe.Load(path), maxSeqLen, truncation, chat);
    }

    /// <inheritdoc/>
    public bool IsSpecial(int id) => _sp.IsControl(id);

    /// <inheritdoc/>
    public TokenPiece PieceOf(int id) => _sp.PieceOf(id);

    /// <inheritdoc/>
    public bool NormalizesNfc => false;

    /// <inheritdoc/>
    public bool RewritesSpaces => true; // the dummy-prefix space, and remove_extra_whitespaces

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true)
    {
        var ids = _sp.Encode(text);
        if (addBos) ids.Insert(0, BosId);
        if (addEos) ids.Add(EosId);
        return ids;
    }

    /// <summary>Encodes a continuation without SentencePiece's leading dummy space.</summary>
    public IReadOnlyList<int> EncodeContinuation(string text)
    {
        var ids = _sp.Encode("\n" + text);
        return ids.Skip(_prefixLength).ToArray();
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        return _sp.Decode(ids, skipControl: skipSpecialTokens);
    }

    /// <summary>Applies the Llama 2 chat template (torchtune Llama2ChatTemplate): the system prompt goes inside the next user turn.</summary>
    public static IReadOnlyList<Message> ApplyChatTemplate(IReadOnlyList<Message> messages)
    {
        var result = new List<Message>(messages.Count);
        var system = "";
        foreach (var m in messages)
        {
            switch (m.Role)
            {
                case "system":
                    system = "<<SYS>>\n" + m.Content + "\n<</SYS>>\n\n";
                    break;
                case "user":
                    result.Add(m with { Content = "[INST] " + system + m.Content + " [/INST] " });
                    system = ""; // Meta's generation.py puts the system prompt in the first user turn only
                    break;
                default:
                    result.Add(m);
                    break;
            }
        }
        return result;
    }

    /// <inheritdoc/>
    public TokenizedMessages TokenizeMessages(IReadOnlyList<Message> messages, bool addEos = true)
    {
        var templated = _chatTemplate ? ApplyChatTemplate(messages) : messages;
        var startOfTurn = true;
        var endOfTurn = false;
        var prevEndsWithSpace = false;
        var tokens = new List<int>();
        var mask = new List<bool>();
        var lastMasked = false;
        foreach (var m in templated)
        {
            lastMasked = m.Masked;
            if (startOfTurn)
            {
                tokens.Add(BosId);
                mask.Add(m.Masked);
            }
            if (m.Role == "assistant") endOfTurn = true;
            // A continuation of the turn loses the dummy-prefix space unless the previous text ended with a space.
            var trimLeading = !startOfTurn && !prevEndsWithSpace;
            var text = m.Content.TrimEnd(' ');
            var ids = trimLeading ? EncodeContinuation(text) : Encode(text, addBos: false, addEos: false);
            prevEndsWithSpace = m.Content.EndsWith(' ');
            tokens.AddRange(ids);
            mask.AddRange(Enumerable.Repeat(m.Masked, ids.Count));
            if (endOfTurn && addEos)
            {
                tokens.Add(EosId);
                mask.Add(m.Masked);
            }
            if (endOfTurn) { endOfTurn = false; startOfTurn = true; }
            else startOfTurn = false;
            if (MaxSeqLen is { } max && tokens.Count >= max && _truncation == TruncationType.Right) break; // left truncation needs the end
        }
        var t = tokens.ToArray();
        var k = mask.ToArray();
        if (MaxSeqLen is { } maxLen && t.Length > 0)
        {
            t = Truncation.Truncate(t, maxLen, addEos ? EosId : null, _truncation);
            k = Truncation.Truncate(k, maxLen, addEos ? lastMasked : null, _truncation);
        }
        return new TokenizedMessages(t, k);
    }
}
