using System.Text.Json;
using SharpTune.Cli.Commands;
using SharpTune.Tokenizers;
using static SharpTune.Tests.Tokenizers.TokenizerFiles;

namespace SharpTune.Tests.Tokenizers;

public sealed class TokenizeReportTests
{
    [SharedDataFact(Llama3Json)]
    public void ToJson_PlainText_PrintsPublishedIdsAsJson()
    {
        var json = TokenizeReport.ToJson(TokenizerLoader.Load(SharedData.PathOf("tokenizers/llama3")),
            "Hello world! Below is an instruction that describes a task.", chat: false, addBos: true, addEos: false);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal([128_000, 9906, 1917, 0, 21883, 374, 459, 7754, 430, 16964, 264, 3465, 13],
            doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(" world", doc.RootElement.GetProperty("pieces")[2].GetString());
    }

    [SharedDataFact(Qwen3Json)]
    public void ToJson_ChatJson_PrintsChatMlIdsAndMask()
    {
        var json = TokenizeReport.ToJson(TokenizerLoader.Load(SharedData.PathOf(Qwen3Json)),
            """[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]""", chat: true, addBos: true, addEos: false);
        using var doc = JsonDocument.Parse(json);
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(151_644, ids[0]);
        Assert.Equal(151_645, ids[^1]);
        var mask = doc.RootElement.GetProperty("mask").EnumerateArray().Select(e => e.GetBoolean()).ToArray();
        Assert.True(mask[0]);
        Assert.False(mask[^1]);
    }

    [Fact]
    public void Validate_TextAndFileBoth_Fails()
    {
        var r = new TokenizeCommand.Settings { Tokenizer = "x", Text = "a", File = "b" }.Validate();
        Assert.False(r.Successful);
    }
}

/// <summary>
/// `tokenize` pieces: the same pieces as decoding every prefix (the definition: each id's share of the decoded text) on
/// real text for a SentencePiece and a byte-level BPE tokenizer, with work linear in the number of ids (counted as ids
/// handed to Decode, not timed, so a loaded machine cannot make it flaky).
/// </summary>
public sealed class TokenizePiecesTests
{
    // The definition, quadratic: decode(ids[..i+1]) minus decode(ids[..i]), an unfinished character at the end of a
    // prefix not counted yet.
    private static string[] PrefixPieces(ITokenizer tokenizer, IReadOnlyList<int> ids)
    {
        var pieces = new string[ids.Count];
        var previous = "";
        for (var i = 0; i < ids.Count; i++)
        {
            var text = tokenizer.Decode(ids.Take(i + 1), skipSpecialTokens: false);
            if (i + 1 < ids.Count) text = text.TrimEnd('\uFFFD');
            pieces[i] = text.StartsWith(previous, StringComparison.Ordinal) ? text[previous.Length..] : tokenizer.Decode([ids[i]], false);
            previous = text;
        }
        return pieces;
    }

    private sealed class CountingTokenizer(ITokenizer inner) : ITokenizer
    {
        public long IdsDecoded;
        public int VocabSize => inner.VocabSize;
        public int BosId => inner.BosId;
        public int EosId => inner.EosId;
        public int PadId => inner.PadId;
        public IReadOnlyList<int> StopTokens => inner.StopTokens;
        public IReadOnlyList<int> Encode(string text, bool addBos = true, bool addEos = true) => inner.Encode(text, addBos, addEos);
        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
        {
            var list = ids.ToList();
            IdsDecoded += list.Count;
            return inner.Decode(list, skipSpecialTokens);
        }
    }

    [SharedDataTheory(Tok512Model, Llama3Json, "text/tinyshakespeare/input.txt")]
    [InlineData(Tok512Model)]
    [InlineData(Llama3Json)]
    public void Pieces_RealText_SameAsPrefixDefinition(string tokenizerFile)
    {
        var tokenizer = TokenizerLoader.Load(SharedData.PathOf(tokenizerFile));
        // Shakespeare plus characters that SentencePiece spells with byte tokens and BPE splits across ids
        var text = File.ReadAllText(SharedData.PathOf("text/tinyshakespeare/input.txt"))[..3000] + " naïve café — 東京 🙂 end";
        var ids = tokenizer.Encode(text, addBos: true, addEos: true);
        var pieces = TokenizeReport.Pieces(tokenizer, ids);
        Assert.Equal(PrefixPieces(tokenizer, ids), pieces);
        Assert.Equal(tokenizer.Decode(ids, skipSpecialTokens: false), string.Concat(pieces));
    }

    [SharedDataFact(Tok512Model, "text/tinyshakespeare/input.txt")]
    public void Pieces_LargeInput_WorkIsLinearInIds()
    {
        var inner = TokenizerLoader.Load(SharedData.PathOf(Tok512Model));
        var ids = inner.Encode(File.ReadAllText(SharedData.PathOf("text/tinyshakespeare/input.txt"))[..100_000], addBos: true, addEos: false);
        var counting = new CountingTokenizer(inner);
        var pieces = TokenizeReport.Pieces(counting, ids);
        Assert.Equal(ids.Count, pieces.Length);
        // Each id is decoded with at most PieceContext ids before it, twice, plus a lone fallback decode: linear.
        // Decoding every prefix would hand Decode about n^2 / 2 ids (~10^9 here).
        var bound = (long)ids.Count * (2 * (TokenizeReport.PieceContext + 1) + 1);
        Assert.InRange(counting.IdsDecoded, ids.Count, bound);
    }
}
