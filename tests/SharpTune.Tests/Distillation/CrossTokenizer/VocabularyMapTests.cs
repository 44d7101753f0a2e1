// The vocabulary map: matches by what tokens spell (SentencePiece's ▁ and byte-level BPE's Ġ both mean a space),
// one-to-one, and its disk cache (atomic, keyed by both fingerprints, corrupt files refused by name).
using SharpTune.Data.Synthetic;
using SharpTune.Distillation.CrossTokenizer;
using SharpTune.Tests.Checkpointing;
using SharpTune.Tests.Tokenizers;
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Distillation.CrossTokenizer;

public sealed class VocabularyMapTests
{
    private static readonly TablePieces s_sp = new(["[<s>]", "▁the", "A", "<0x41>", "<0xE4>", "<unk>", "x"], rewritesSpaces: true);
    private static readonly TablePieces s_bpe = new([" the", "A", "\u00e4", "[<s>]", "<0xE4>", "<unk>", "y"]);

    [Fact]
    public void Build_SentencePieceAndByteLevel_MatchBySpelledBytes()
    {
        var map = VocabularyMap.Build(s_sp, s_bpe);
        // ▁the = " the"; "A" (the ordinary piece, not <0x41>); the byte 0xE4 on both sides; <s> with <s>.
        // the unknown pieces; ä (C3 A4) is not the byte E4, x and y differ.
        Assert.Equal([0, 1, 2, 4, 5], map.TeacherIds);
        Assert.Equal([3, 0, 1, 4, 5], map.StudentIds);
        Assert.False(map.IsIdentity);
    }

    [Fact]
    public void Build_SameTokenizerBothSides_IsIdentity()
    {
        var map = VocabularyMap.Build(new CharTokenizer(), new CharTokenizer());
        Assert.True(map.IsIdentity);
        Assert.Equal(new CharTokenizer().VocabSize, map.Count);
    }

    [SharedDataFact(TokenizerFiles.Tok512Model, TokenizerFiles.Llama3Json)]
    public void Build_Tok512AndLlama3_WordWithSpaceAndFallbackBytesMatch()
    {
        var sp = TokenizerFiles.Tok512;
        var llama = TokenizerFiles.Llama3;
        var map = VocabularyMap.Build(sp, llama);
        var pairs = map.TeacherIds.Zip(map.StudentIds).ToDictionary(p => p.First, p => p.Second);

        var spThe = sp.Vocabulary["\u2581the"];
        var llamaThe = Assert.Single(llama.Encode(" the", addBos: false, addEos: false));
        Assert.Equal(llamaThe, pairs[spThe]);
        var spByte = sp.Vocabulary["<0xE4>"];
        Assert.Equal([0xE4], llama.PieceOf(pairs[spByte]).Bytes);
        // Every pair spells the same bytes; a matched pair is never a special with an ordinary token.
        foreach (var (t, s) in pairs)
        {
            var (pt, ps) = (sp.PieceOf(t), llama.PieceOf(s));
            Assert.Equal(pt.Kind == TokenPieceKind.Special, ps.Kind == TokenPieceKind.Special);
            Assert.Equal(pt.Bytes, ps.Bytes);
        }
        Assert.True(map.Count > 400, $"{map.Count} of 512 tok512 pieces matched");
    }

    [Fact]
    public void LoadOrBuild_SecondCall_ReadsTheSameMapFromItsCacheFile()
    {
        using var dir = new TempDir();
        var built = VocabularyMap.LoadOrBuild(s_sp, s_bpe, dir.Path);
        var file = Assert.Single(Directory.GetFiles(dir.Path)); // no temporary file left behind
        Assert.Equal(VocabularyMap.CachePath(dir.Path, VocabularyMap.Fingerprint(s_sp), VocabularyMap.Fingerprint(s_bpe)), file);
        var written = File.GetLastWriteTimeUtc(file);

        var loaded = VocabularyMap.LoadOrBuild(s_sp, s_bpe, dir.Path);
        Assert.Equal(built.TeacherIds, loaded.TeacherIds);
        Assert.Equal(built.StudentIds, loaded.StudentIds);
        Assert.Equal(written, File.GetLastWriteTimeUtc(file));
    }

    [Theory]
    [InlineData("flip", "checksum mismatch")]
    [InlineData("truncate", "bytes, expected")]
    [InlineData("garbage", "not a SharpTune vocabulary map")]
    public void LoadOrBuild_CorruptCacheFile_ErrorNamesFileAndProblem(string damage, string expected)
    {
        using var dir = new TempDir();
        VocabularyMap.LoadOrBuild(s_sp, s_bpe, dir.Path);
        var file = Directory.GetFiles(dir.Path)[0];
        var data = File.ReadAllBytes(file);
        switch (damage)
        {
            case "flip": data[^40] ^= 1; break;
            case "truncate": data = data[..^5]; break;
            default: data = "not a map"u8.ToArray(); break;
        }
        File.WriteAllBytes(file, data);

        var e = Assert.Throws<InvalidDataException>(() => VocabularyMap.LoadOrBuild(s_sp, s_bpe, dir.Path));
        Assert.Contains(file, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Read_FileOfAnotherPair_Refused()
    {
        using var dir = new TempDir();
        var map = VocabularyMap.Build(s_sp, s_bpe);
        var path = System.IO.Path.Combine(dir.Path, "m.bin");
        map.Write(path);

        var e = Assert.Throws<InvalidDataException>(() =>
            VocabularyMap.Read(path, VocabularyMap.Fingerprint(s_bpe), VocabularyMap.Fingerprint(s_sp), s_bpe.VocabSize, s_sp.VocabSize));
        Assert.Contains("written for tokenizers", e.Message);
    }
}
