// Token offsets and span alignment: hand-made pairs with offsets worked out by hand, then the real tokenizer files
// (Llama 3 vs Qwen3 byte-level BPE, stories260K's 512-piece SentencePiece vs Llama 3) on hard strings, where the
// spans are checked against an independent rule: a span boundary is exactly a byte offset where both tokenizations
// have a boundary, and each side's tokens of a span spell exactly the span's bytes.
using System.Text;
using SharpTune.Data.Synthetic;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Tests.Tokenizers;
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Distillation.CrossTokenizer;

public sealed class SpanAlignmentTests
{
    private static TokenOffset O(int s, int e) => new(s, e);

    [Fact]
    public void Compute_ByteLevelPieces_OffsetsAreCumulativeBytes()
    {
        var tok = new TablePieces(["Hello", " world", "é", "!"]);
        var offsets = TokenOffsets.Compute(tok, "Hello world!é", tok.Ids("Hello", " world", "!", "é"));
        Assert.Equal([O(0, 5), O(5, 11), O(11, 12), O(12, 14)], offsets); // é is two UTF-8 bytes
    }

    [Fact]
    public void Compute_SentencePieceSpaces_DummyPrefixHasNoWidthAndDroppedSpacesJoinTheNextToken()
    {
        // remove_extra_whitespaces turns "  a   b  " into "▁a▁b": the leading spaces and the collapsed run belong to the
        // token after them, the trailing ones to the last token.
        var tok = new TablePieces(["▁a", "▁b", "[</s>]"], rewritesSpaces: true);
        Assert.Equal([O(0, 3), O(3, 9), O(9, 9)], TokenOffsets.Compute(tok, "  a   b  ", tok.Ids("▁a", "▁b", "[</s>]")));
        Assert.Equal([O(0, 1), O(1, 3)], TokenOffsets.Compute(tok, "a b", tok.Ids("▁a", "▁b"))); // dummy prefix: no width
    }

    [Fact]
    public void Compute_ByteFallbackAndUnknown_ByteFallbackSplitsACharacterUnknownTakesOneCodePoint()
    {
        var tok = new TablePieces(["<0xE4>", "<0xB8>", "<0xAD>", "<unk>", "x"]);
        // 中 is E4 B8 AD; 🙂 is four bytes and the unknown piece covers all of it.
        var offsets = TokenOffsets.Compute(tok, "中🙂x", tok.Ids("<0xE4>", "<0xB8>", "<0xAD>", "<unk>", "x"));
        Assert.Equal([O(0, 1), O(1, 2), O(2, 3), O(3, 7), O(7, 8)], offsets);
    }

    [Fact]
    public void Compute_TokensThatDoNotSpellTheText_ErrorNamesTokenAndByte()
    {
        var tok = new TablePieces(["ab", "c"]);
        var e = Assert.Throws<ArgumentException>(() => TokenOffsets.Compute(tok, "abd", tok.Ids("ab", "c")));
        Assert.Contains("token 1 (id 1", e.Message);
        Assert.Contains("at byte 2 of 3", e.Message);
        Assert.Contains("0x64 where the token has 0x63", e.Message);
    }

    [Fact]
    public void Compute_NfcTokenizerOnDecomposedText_ErrorSaysToNormalise()
    {
        var tok = new TablePieces(["é"], nfc: true);
        var e = Assert.Throws<ArgumentException>(() => TokenOffsets.Compute(tok, "e\u0301", tok.Ids("é")));
        Assert.Contains("NFC", e.Message);
    }

    [Fact]
    public void Align_SplitWords_OneSpanPerWord()
    {
        var t = new TablePieces(["Hello", " world"]);
        var s = new TablePieces(["Hel", "lo", " wor", "ld"]);
        const string text = "Hello world";
        var spans = SpanAlignment.Align(TokenOffsets.Compute(t, text, t.Ids("Hello", " world")),
            TokenOffsets.Compute(s, text, s.Ids("Hel", "lo", " wor", "ld")));
        Assert.Equal([new AlignedSpan(0, 5, 0, 1, 0, 2), new AlignedSpan(5, 11, 1, 1, 2, 2)], spans);
    }

    [Fact]
    public void Align_StraddlingTokens_MergeUntilBothAgree()
    {
        // "ab|cd" vs "a|bc|d": the only shared boundaries are 0 and 4.
        var spans = SpanAlignment.Align([O(0, 2), O(2, 4), O(4, 5)], [O(0, 1), O(1, 3), O(3, 4), O(4, 5)]);
        Assert.Equal([new AlignedSpan(0, 4, 0, 2, 0, 3), new AlignedSpan(4, 5, 2, 1, 3, 1)], spans);
    }

    [Fact]
    public void Align_SpecialTokens_JoinTheFollowingSpanAndLeftoversFormAnUnpairedSpan()
    {
        // teacher: [BOS] "hi" "!" ; student: "hi" [EOT] "!" [EOS]
        var spans = SpanAlignment.Align([O(0, 0), O(0, 2), O(2, 3)], [O(0, 2), O(2, 2), O(2, 3), O(3, 3)]);
        Assert.Equal(
            [new AlignedSpan(0, 2, 0, 2, 0, 1), new AlignedSpan(2, 3, 2, 1, 1, 2), new AlignedSpan(3, 3, 3, 0, 3, 1)], spans);
        Assert.False(spans[2].IsPaired);
    }

    [Fact]
    public void Align_OffsetsGoingBackwards_ClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => SpanAlignment.Align([O(0, 3), O(2, 4)], [O(0, 4)]));
        Assert.Contains("teacher token 1 starts at byte 2, before token 0 ends (3)", e.Message);
    }

    public static TheoryData<string, string> Pairs => new()
    {
        { TokenizerFiles.Llama3Json, TokenizerFiles.Qwen3Json },
        { TokenizerFiles.Tok512Model, TokenizerFiles.Llama3Json },
        { TokenizerFiles.Qwen3Json, TokenizerFiles.Tok512Model },
    };

    [SharedDataTheory(TokenizerFiles.Llama3Json, TokenizerFiles.Qwen3Json, TokenizerFiles.Tok512Model)]
    [MemberData(nameof(Pairs))]
    public void Align_RealTokenizersOnHardText_SpanBoundariesAreExactlyTheSharedBoundaries(string teacherFile, string studentFile)
    {
        var teacher = Load(teacherFile);
        var student = Load(studentFile);
        var checkedSpans = 0;
        foreach (var raw in TestText.UnicodeEdgeCases.Append("Once upon a time,\n\n  there   was a 🐻.  "))
        {
            var text = UnicodeNfc.Normalize(raw); // Qwen's normaliser is NFC: both sides must see the same string
            var bytes = Encoding.UTF8.GetBytes(text);
            // Special tokens at both ends, as a formatted sequence has them.
            var tIds = WithSpecials(teacher, text);
            var sIds = WithSpecials(student, text);
            var tOff = TokenOffsets.Compute((ITokenPieces)teacher, text, tIds);
            var sOff = TokenOffsets.Compute((ITokenPieces)student, text, sIds);
            CheckCovers(teacher, text, bytes, tIds, tOff);
            CheckCovers(student, text, bytes, sIds, sOff);

            var spans = SpanAlignment.Align(tOff, sOff);
            var shared = tOff.Select(o => o.End).Intersect(sOff.Select(o => o.End)).Order().ToArray();
            // When one side's tokens end before the other's (SentencePiece encodes a text of only spaces as nothing),
            // the last, left-over span ends where the longer side ends.
            var (tLast, sLast) = (tOff.Length > 0 ? tOff[^1].End : 0, sOff.Length > 0 ? sOff[^1].End : 0);
            var expectedEnds = tLast == sLast ? shared : [.. shared, Math.Max(tLast, sLast)];
            Assert.Equal(expectedEnds, spans.Select(s => s.ByteEnd).Distinct().ToArray());
            var next = (T: 0, S: 0, Byte: 0);
            foreach (var span in spans)
            {
                Assert.Equal((next.T, next.S, next.Byte), (span.TeacherStart, span.StudentStart, span.ByteStart));
                if (span.TeacherCount > 0 && span.ByteEnd <= tLast) Assert.Equal(span.ByteEnd, tOff[span.TeacherStart + span.TeacherCount - 1].End);
                if (span.StudentCount > 0 && span.ByteEnd <= sLast) Assert.Equal(span.ByteEnd, sOff[span.StudentStart + span.StudentCount - 1].End);
                next = (span.TeacherStart + span.TeacherCount, span.StudentStart + span.StudentCount, span.ByteEnd);
                checkedSpans++;
            }
            Assert.Equal((tIds.Count, sIds.Count, bytes.Length), next);
        }
        Assert.True(checkedSpans > 100, $"only {checkedSpans} spans checked");
    }

    [Fact]
    public void Compute_CharTokenizer_OneBytePerCharacter()
    {
        var tok = new CharTokenizer();
        var ids = tok.Encode("a  b", addBos: true, addEos: true);
        Assert.Equal([O(0, 0), O(0, 1), O(1, 2), O(2, 3), O(3, 4), O(4, 4)], TokenOffsets.Compute(tok, "a  b", ids));
    }

    private static IChatTokenizer Load(string file) => file switch
    {
        TokenizerFiles.Llama3Json => TokenizerFiles.Llama3,
        TokenizerFiles.Qwen3Json => TokenizerFiles.Qwen,
        _ => TokenizerFiles.Tok512,
    };

    private static List<int> WithSpecials(ITokenizer tok, string text)
    {
        var ids = new List<int>(tok.Encode(text, addBos: tok.BosId >= 0, addEos: true));
        return ids;
    }

    // Offsets go forward without gaps from 0 to the end of the text, and each token's slice of the text is what the
    // token spells (up to the spaces a SentencePiece tokenizer adds or drops).
    private static void CheckCovers(ITokenizer tok, string text, byte[] bytes, IReadOnlyList<int> ids, TokenOffset[] off)
    {
        var pieces = (ITokenPieces)tok;
        var pos = 0;
        for (var i = 0; i < ids.Count; i++)
        {
            Assert.Equal(pos, off[i].Start);
            var slice = bytes.AsSpan(off[i].Start, off[i].End - off[i].Start).ToArray();
            var p = pieces.PieceOf(ids[i]);
            if (p.Kind is TokenPieceKind.Text or TokenPieceKind.ByteFallback)
            {
                if (pieces.RewritesSpaces) Assert.Equal(Strip(p.Bytes), Strip(slice));
                else Assert.Equal(p.Bytes, slice);
            }
            else if (p.Kind == TokenPieceKind.Special) Assert.Empty(slice);
            pos = off[i].End;
        }
        // Only a text that is nothing but spaces leaves bytes to no token (SentencePiece encodes it as nothing).
        var allDropped = pieces.RewritesSpaces && bytes.AsSpan(pos).IndexOfAnyExcept((byte)' ') < 0 &&
            ids.All(id => pieces.PieceOf(id).Kind == TokenPieceKind.Special);
        Assert.True(pos == bytes.Length || allDropped, $"'{text}': tokens cover {pos} of {bytes.Length} bytes");
    }

    private static byte[] Strip(byte[] b) => [.. b.Where(x => x != (byte)' ')];
}
