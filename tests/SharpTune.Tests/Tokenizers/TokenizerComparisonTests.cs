// TokenizerComparison against real tokenizer files we did not write (stories260K's tok512, Llama 2, Llama 3, Llama 3.1,
// Qwen3) and against synthetic tokenizers that differ in exactly one piece or one special id: equal sizes or a shared
// byte alphabet must not pass as "the same tokenizer", and the same file loaded twice must.
using SharpTune.Data.Synthetic;
using SharpTune.Tokenizers;

namespace SharpTune.Tests.Tokenizers;

public sealed class TokenizerComparisonTests
{
    // The character tokenizer with one id's text changed, or another EOS id: the smallest possible difference.
    private sealed class AlteredCharTokenizer(int? changedId = null, int? eosId = null) : ITokenizer
    {
        private readonly CharTokenizer _inner = new();
        public int VocabSize => _inner.VocabSize;
        public int BosId => _inner.BosId;
        public int EosId => eosId ?? _inner.EosId;
        public int PadId => _inner.PadId;
        public IReadOnlyList<int> StopTokens => [EosId];
        public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true) => _inner.Encode(text, addBos, addEos);
        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) =>
            string.Concat(ids.Select(id => id == changedId ? "\u00e9" : _inner.Decode([id], skipSpecialTokens)));
    }

    [Fact]
    public void Difference_SameSyntheticTokenizer_IsNull()
    {
        Assert.Null(TokenizerComparison.Difference(new CharTokenizer(), new CharTokenizer(maxSeqLen: 32)));
    }

    [Fact]
    public void Difference_OnePieceChanged_NamesThatIdAndBothTexts()
    {
        var d = TokenizerComparison.Difference(new CharTokenizer(), new AlteredCharTokenizer(changedId: 40), "teacher", "student");

        Assert.NotNull(d);
        Assert.StartsWith("teacher vs student:", d);
        Assert.Contains("1 of the 99 shared ids differ", d);
        Assert.Contains($"id 40 is '{CharTokenizer.Alphabet[40 - 3]}' vs '\u00e9'", d);
    }

    [Fact]
    public void Difference_OnlyEosIdDiffers_NamesTheSpecialIds()
    {
        var d = TokenizerComparison.Difference(new CharTokenizer(), new AlteredCharTokenizer(eosId: 0));

        Assert.NotNull(d);
        Assert.Contains("EOS id 2 vs 0", d);
        Assert.DoesNotContain("shared ids differ", d);
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Difference_SameFileLoadedTwice_IsNull()
    {
        var again = Llama2Tokenizer.FromModel(SharedData.PathOf(TokenizerFiles.Tok512Model));
        Assert.Null(TokenizerComparison.Difference(TokenizerFiles.Tok512, again));
    }

    [SharedDataFact(TokenizerFiles.Tok512Model)]
    public void Difference_Tok512VsCharTokenizer_DifferInSizeAndPieces()
    {
        // The pair: stories260K's 512-piece SentencePiece model vs the built-in character tokenizer.
        var d = TokenizerComparison.Difference(TokenizerFiles.Tok512, new CharTokenizer(), "teacher", "student");

        Assert.NotNull(d);
        Assert.Contains("512 ids vs 99", d);
        Assert.Contains("shared ids differ", d);
    }

    [SharedDataFact(TokenizerFiles.Tok512Model, TokenizerFiles.Llama2Model)]
    public void Difference_Tok512VsLlama2_SameFamilySameSpecialsStillDiffer()
    {
        // Both SentencePiece with <unk>, <s>, </s> at 0..2 and byte pieces at 3..258: the merges after them differ.
        var d = TokenizerComparison.Difference(TokenizerFiles.Tok512, TokenizerFiles.Llama2);

        Assert.NotNull(d);
        Assert.DoesNotContain("BOS", d);
        Assert.Contains("shared ids differ", d);
    }

    [SharedDataFact(TokenizerFiles.Llama3Json, TokenizerFiles.Qwen3Json)]
    public void Difference_Llama3VsQwen3_SharedByteAlphabetDoesNotMakeThemEqual()
    {
        // The first 256 ids of both are GPT-2's byte alphabet in the same order; everything after differs.
        for (var id = 0; id < 256; id++)
            Assert.Equal(TokenizerComparison.Piece(TokenizerFiles.Llama3, id), TokenizerComparison.Piece(TokenizerFiles.Qwen, id));

        var d = TokenizerComparison.Difference(TokenizerFiles.Llama3, TokenizerFiles.Qwen, "teacher", "student");

        Assert.NotNull(d);
        Assert.Contains($"{TokenizerFiles.Llama3.VocabSize} ids vs {TokenizerFiles.Qwen.VocabSize}", d);
        Assert.Contains("shared ids differ", d);
    }
}
