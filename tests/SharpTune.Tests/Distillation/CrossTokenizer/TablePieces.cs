// A tokenizer given as a table of pieces, for hand-made alignment and vocabulary-map cases: "<0xHH>" is a byte-fallback
// piece, "[name]" a special token, "<unk>" the unknown piece, anything else an ordinary piece ('▁' written as a space
// when the table rewrites spaces, as SentencePiece does).
using System.Globalization;
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Distillation.CrossTokenizer;

internal sealed class TablePieces(string[] pieces, bool rewritesSpaces = false, bool nfc = false) : ITokenPieces
{
    public int VocabSize => pieces.Length;
    public bool NormalizesNfc => nfc;
    public bool RewritesSpaces => rewritesSpaces;

    public int Id(string piece) => Array.IndexOf(pieces, piece) is var i and >= 0 ? i
        : throw new ArgumentException($"no piece '{piece}' in the table");

    public int[] Ids(params string[] sequence) => [.. sequence.Select(Id)];

    public TokenPiece PieceOf(int id)
    {
        var p = pieces[id];
        if (p == "<unk>") return TokenPiece.Unknown;
        if (p.Length == 6 && p.StartsWith("<0x", StringComparison.Ordinal) && p[5] == '>')
            return TokenPiece.Byte(byte.Parse(p.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture));
        if (p.Length > 2 && p[0] == '[' && p[^1] == ']') return TokenPiece.Special(p[1..^1]);
        return TokenPiece.Text(p.Replace('\u2581', ' '));
    }
}
