// Where each token of an encoded text sits in that text, as UTF-8 byte offsets: the coordinate system in which two
// tokenizations of one text can be compared (TRL's GOLDTrainer aligns by byte offsets for the same reason; a character
// offset cannot say where a byte-fallback piece splits a multi-byte character). SharpTune's tokenizers do not report
// offsets while encoding, so they are recovered by walking the tokens' bytes (Tokenizers/TokenPieces.cs) along the
// text's bytes. SentencePiece rewrites spaces (a dummy-prefix space, and remove_extra_whitespaces drops and collapses
// runs): a space the tokens have and the text lacks gets no width, a text space the tokens lack is counted in the token
// after it (or, at the end of the text, in the last token). Special tokens have width zero; SentencePiece's unknown
// piece covers one code point (BPE never merges a symbol that no piece contains).
using System.Text;
using SharpTune.Tokenizers;

namespace SharpTune.Distillation.CrossTokenizer;

/// <summary>A token's place in the text: UTF-8 byte offsets [Start, End).</summary>
/// <param name="Start">First byte the token covers.</param>
/// <param name="End">One past the last byte (equal to <paramref name="Start"/> for a special token).</param>
public readonly record struct TokenOffset(int Start, int End);

/// <summary>Recovers token offsets from the tokens' bytes.</summary>
public static class TokenOffsets
{
    /// <summary>
    /// Byte offsets in <paramref name="text"/> of each of <paramref name="ids"/>, which <paramref name="tokenizer"/>
    /// encoded from <paramref name="text"/> (special ids anywhere are allowed; ids may stop before the text ends, e.g.
    /// after truncation).
    /// </summary>
    /// <exception cref="ArgumentException">The tokens do not spell the text: names the token, its bytes, the byte
    /// offset and the text there (for an NFC-normalising tokenizer, says to normalise the text first).</exception>
    public static TokenOffset[] Compute(ITokenPieces tokenizer, string text, IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(ids);
        var t = Encoding.UTF8.GetBytes(text);
        var spaces = tokenizer.RewritesSpaces;
        var offsets = new TokenOffset[ids.Count];
        var pos = 0;
        var lastText = -1;
        for (var i = 0; i < ids.Count; i++)
        {
            var piece = tokenizer.PieceOf(ids[i]);
            var start = pos;
            switch (piece.Kind)
            {
                case TokenPieceKind.Special:
                    break;
                case TokenPieceKind.Unknown:
                    while (spaces && pos < t.Length && t[pos] == (byte)' ') pos++;
                    if (pos >= t.Length) throw Mismatch(tokenizer, text, t, ids, i, piece, pos, "the text has ended");
                    pos += Utf8Length(t[pos]);
                    lastText = i;
                    break;
                case TokenPieceKind.Text or TokenPieceKind.ByteFallback:
                    foreach (var b in piece.Bytes)
                    {
                        while (true)
                        {
                            if (pos < t.Length && t[pos] == b) { pos++; break; }
                            if (spaces && b == (byte)' ') break;                        // a space the tokenizer added
                            if (spaces && pos < t.Length && t[pos] == (byte)' ') { pos++; continue; } // a space it dropped
                            throw Mismatch(tokenizer, text, t, ids, i, piece, pos,
                                pos < t.Length ? $"the text has byte 0x{t[pos]:X2} where the token has 0x{b:X2}" : "the text has ended");
                        }
                    }
                    lastText = i;
                    break;
                default:
                    throw new ArgumentException($"token {i} is id {ids[i]}, which the tokenizer never emits (no piece has that id)", nameof(ids));
            }
            offsets[i] = new TokenOffset(start, pos);
        }
        // Spaces SentencePiece dropped from the end of the text belong to the last token that spells text.
        if (spaces && lastText >= 0 && pos < t.Length && t.AsSpan(pos).IndexOfAnyExcept((byte)' ') < 0)
        {
            offsets[lastText] = offsets[lastText] with { End = t.Length };
            for (var i = lastText + 1; i < offsets.Length; i++) offsets[i] = new TokenOffset(t.Length, t.Length);
        }
        return offsets;
    }

    // Length of the UTF-8 sequence that starts with lead byte b (a stray continuation byte counts as one).
    private static int Utf8Length(byte b) => b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;

    private static ArgumentException Mismatch(ITokenPieces tokenizer, string text, byte[] t, IReadOnlyList<int> ids, int i,
        TokenPiece piece, int pos, string what)
    {
        var context = Encoding.UTF8.GetString(t, pos, Math.Min(12, t.Length - pos));
        var hint = tokenizer.NormalizesNfc && UnicodeNfc.Normalize(text) != text
            ? "; this tokenizer NFC-normalises its input and the text is not NFC: pass UnicodeNfc.Normalize(text) to both tokenizers"
            : "; were the ids encoded from this text by this tokenizer?";
        return new ArgumentException(
            $"token {i} (id {ids[i]}, {piece.Kind} {Convert.ToHexString(piece.Bytes)}) does not spell the text at byte {pos} " +
            $"of {t.Length} ('{context}'): {what}{hint}", nameof(ids));
    }
}
