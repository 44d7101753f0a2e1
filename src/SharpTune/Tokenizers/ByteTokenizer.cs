// A byte-level tokenizer with no merges: one id per UTF-8 byte, plus PAD, BOS and EOS (the layout of ByT5, Xue et al.
// 2022, "ByT5: Towards a Token-Free Future with Pre-trained Byte-to-Byte Models", with a BOS added so documents can be
// marked as with the other tokenizers). It needs no files, spells any text, and is the natural student of a
// cross-tokenizer distillation (docs/cross_tokenizer.md): its tokens never straddle a character of a teacher's
// tokenization, except inside a multi-byte character.
using System.Text;
using SharpTune.Config;

namespace SharpTune.Tokenizers;

/// <summary>Ids 0 PAD, 1 BOS, 2 EOS, then byte b as id b + 3 (259 ids).</summary>
public sealed class ByteTokenizer : ITokenizer, ITokenPieces
{
    private const int SpecialCount = 3;
    private static readonly string[] s_specials = ["<pad>", "<s>", "</s>"];

    /// <summary>Config component.</summary>
    [Component("sharptune.tokenizers.byte_tokenizer")]
    public static ByteTokenizer Create() => new();

    /// <inheritdoc />
    public int VocabSize => 256 + SpecialCount;

    /// <inheritdoc />
    public int BosId => 1;

    /// <inheritdoc />
    public int EosId => 2;

    /// <inheritdoc />
    public int PadId => 0;

    /// <inheritdoc />
    public IReadOnlyList<int> StopTokens => [EosId];

    /// <inheritdoc />
    public bool NormalizesNfc => false;

    /// <inheritdoc />
    public bool RewritesSpaces => false;

    /// <inheritdoc />
    public TokenPiece PieceOf(int id) => (uint)id < SpecialCount ? TokenPiece.Special(s_specials[id])
        : id < VocabSize ? TokenPiece.Text([(byte)(id - SpecialCount)])
        : throw new ArgumentOutOfRangeException(nameof(id), id, $"id outside the vocabulary (0..{VocabSize - 1})");

    /// <inheritdoc />
    public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new List<int>(bytes.Length + 2);
        if (addBos) ids.Add(BosId);
        foreach (var b in bytes) ids.Add(b + SpecialCount);
        if (addEos) ids.Add(EosId);
        return ids;
    }

    /// <summary>Decodes ids; bytes that do not form valid UTF-8 (a sequence cut inside a character) decode to U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString([.. bytes]));
            bytes.Clear();
        }
        foreach (var id in ids)
        {
            if ((uint)id >= (uint)VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the vocabulary (0..{VocabSize - 1})");
            if (id >= SpecialCount) { bytes.Add((byte)(id - SpecialCount)); continue; }
            Flush();
            if (!skipSpecialTokens) sb.Append(s_specials[id]);
        }
        Flush();
        return sb.ToString();
    }
}
