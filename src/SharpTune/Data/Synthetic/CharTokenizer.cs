// A character-level tokenizer over a fixed alphabet, for the built-in demo task and tiny tests: it needs no files,
// so the demo runs on a fresh clone without downloads.
using System.Text;
using SharpTune.Config;

namespace SharpTune.Data.Synthetic;

/// <summary>
/// One id per character of a fixed printable alphabet, plus BOS, EOS and PAD. Characters outside the alphabet are
/// rejected with a clear error (the demo generator never produces them).
/// </summary>
public sealed class CharTokenizer : Tokenizers.ITokenizer, Tokenizers.ITokenPieces
{
    /// <summary>The characters the tokenizer knows, in id order after the three special ids.</summary>
    public const string Alphabet =
        " \n!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

    private const int SpecialCount = 3;
    private readonly Dictionary<char, int> _ids;

    /// <summary>Creates the tokenizer; <paramref name="maxSeqLen"/> truncates encodings when set.</summary>
    public CharTokenizer(int? maxSeqLen = null)
    {
        MaxSeqLen = maxSeqLen;
        _ids = new Dictionary<char, int>(Alphabet.Length);
        for (var i = 0; i < Alphabet.Length; i++) _ids[Alphabet[i]] = i + SpecialCount;
    }

    /// <summary>Config component for the demo tokenizer.</summary>
    [Component("sharptune.data.synthetic.char_tokenizer")]
    public static CharTokenizer Create(int? maxSeqLen = null) => new(maxSeqLen);

    /// <summary>Optional truncation length (keeps the end token).</summary>
    public int? MaxSeqLen { get; }

    /// <inheritdoc />
    public int VocabSize => Alphabet.Length + SpecialCount;

    /// <inheritdoc />
    public int BosId => 1;

    /// <inheritdoc />
    public int EosId => 2;

    /// <inheritdoc />
    public int PadId => 0;

    /// <inheritdoc />
    public IReadOnlyList<int> StopTokens => [EosId];

    /// <inheritdoc />
    public Tokenizers.TokenPiece PieceOf(int id) => id switch
    {
        0 => Tokenizers.TokenPiece.Special("<pad>"),
        1 => Tokenizers.TokenPiece.Special("<s>"),
        2 => Tokenizers.TokenPiece.Special("</s>"),
        _ when id >= SpecialCount && id < VocabSize => Tokenizers.TokenPiece.Text(Alphabet[id - SpecialCount].ToString()),
        _ => throw new ArgumentOutOfRangeException(nameof(id), id, $"id outside the vocabulary (0..{VocabSize - 1})"),
    };

    /// <inheritdoc />
    public bool NormalizesNfc => false;

    /// <inheritdoc />
    public bool RewritesSpaces => false;

    /// <inheritdoc />
    public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true)
    {
        var ids = new List<int>(text.Length + 2);
        if (addBos) ids.Add(BosId);
        for (var i = 0; i < text.Length; i++)
        {
            if (!_ids.TryGetValue(text[i], out var id))
                throw new ArgumentException(
                    $"character U+{(int)text[i]:X4} at index {i} is not in the demo tokenizer's alphabet", nameof(text));
            ids.Add(id);
        }
        if (addEos) ids.Add(EosId);
        if (MaxSeqLen is { } max && ids.Count > max)
        {
            var last = ids[^1];
            ids.RemoveRange(max, ids.Count - max);
            if (addEos) ids[^1] = last;
        }
        return ids;
    }

    /// <inheritdoc />
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            if (id >= SpecialCount && id < VocabSize) sb.Append(Alphabet[id - SpecialCount]);
            else if (!skipSpecialTokens) sb.Append(id switch { 0 => "<pad>", 1 => "<s>", 2 => "</s>", _ => $"<{id}>" });
            else if (id < 0 || id >= VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the vocabulary (0..{VocabSize - 1})");
        }
        return sb.ToString();
    }
}
