// What each token id stands for in the text, in one form for every tokenizer family: the UTF-8 bytes it contributes
// (SentencePiece's U+2581 written back as a space, a byte-fallback piece <0xHH> as its byte, a byte-level BPE token's
// GPT-2 alphabet decoded to bytes), a special token (no text), or SentencePiece's unknown piece (one code point that
// the vocabulary cannot spell). Cross-tokenizer distillation needs it twice: to find where each token sits in the text
// (Distillation/CrossTokenizer/TokenOffsets.cs) and to match two vocabularies by what their tokens say
// (Distillation/CrossTokenizer/VocabularyMap.cs).
using System.Text;

namespace SharpTune.Tokenizers;

/// <summary>How a token relates to the text.</summary>
public enum TokenPieceKind
{
    /// <summary>An ordinary token: <see cref="TokenPiece.Bytes"/> are the UTF-8 bytes it spells.</summary>
    Text,

    /// <summary>A SentencePiece byte-fallback piece (&lt;0xHH&gt;): one byte of text the vocabulary has no piece for.</summary>
    ByteFallback,

    /// <summary>A special/control token: it spells no text (width zero in the text).</summary>
    Special,

    /// <summary>SentencePiece's unknown piece: it stands for one code point the vocabulary cannot spell.</summary>
    Unknown,

    /// <summary>An id no table defines (a gap in the special ids); the tokenizer never emits it.</summary>
    Unused,
}

/// <summary>One token's meaning in the text.</summary>
/// <param name="Kind">What kind of token it is.</param>
/// <param name="Bytes">UTF-8 bytes it spells (empty unless <see cref="TokenPieceKind.Text"/> or
/// <see cref="TokenPieceKind.ByteFallback"/>).</param>
/// <param name="Name">The special token's string (empty otherwise).</param>
public readonly record struct TokenPiece(TokenPieceKind Kind, byte[] Bytes, string Name)
{
    /// <summary>An ordinary token spelling <paramref name="bytes"/>.</summary>
    public static TokenPiece Text(byte[] bytes) => new(TokenPieceKind.Text, bytes, "");

    /// <summary>An ordinary token spelling <paramref name="text"/>.</summary>
    public static TokenPiece Text(string text) => new(TokenPieceKind.Text, Encoding.UTF8.GetBytes(text), "");

    /// <summary>A byte-fallback piece for <paramref name="value"/>.</summary>
    public static TokenPiece Byte(byte value) => new(TokenPieceKind.ByteFallback, [value], "");

    /// <summary>A special token named <paramref name="name"/>.</summary>
    public static TokenPiece Special(string name) => new(TokenPieceKind.Special, [], name);

    /// <summary>The unknown piece.</summary>
    public static TokenPiece Unknown { get; } = new(TokenPieceKind.Unknown, [], "");

    /// <summary>An id with no meaning.</summary>
    public static TokenPiece Unused { get; } = new(TokenPieceKind.Unused, [], "");
}

/// <summary>A tokenizer that can say what each of its ids stands for.</summary>
public interface ITokenPieces
{
    /// <summary>Number of ids (special tokens included).</summary>
    int VocabSize { get; }

    /// <summary>What <paramref name="id"/> stands for.</summary>
    TokenPiece PieceOf(int id);

    /// <summary>
    /// Whether the tokenizer NFC-normalises text before encoding (Qwen2). Its tokens then spell the normalised text,
    /// so token offsets exist only for text that is already NFC.
    /// </summary>
    bool NormalizesNfc { get; }

    /// <summary>
    /// Whether the tokenizer adds or drops spaces (SentencePiece: a dummy-prefix space in front of the text and, with
    /// remove_extra_whitespaces, leading and trailing spaces dropped and runs of spaces collapsed to one). Token offsets
    /// then give an added space no width and count a dropped space as part of the token after it.
    /// </summary>
    bool RewritesSpaces { get; }
}
