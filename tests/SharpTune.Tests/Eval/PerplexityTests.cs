// Rolling-window perplexity against the harness's window rule (lm_eval/utils.py get_rolling_token_windows with
// context_len 1, make_disjoint_window) and hand-computed log-likelihoods.
using System.Text;
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class PerplexityTests
{
    [Fact]
    public void RollingWindows_TenTokensMaxFour_HarnessWindows()
    {
        var tokens = Enumerable.Range(0, 10).ToArray();

        var w = Perplexity.RollingWindows(tokens, prefixToken: 99, maxLength: 4).ToArray();

        // ([99], 0..3), then input tokens[3:7] -> context [3], predict 4..7, then input tokens[5:9] -> context [5,6,7], predict 8,9.
        Assert.Equal(3, w.Length);
        Assert.Equal(new[] { 99 }, w[0].Context);
        Assert.Equal(new[] { 0, 1, 2, 3 }, w[0].Continuation);
        Assert.Equal(new[] { 3 }, w[1].Context);
        Assert.Equal(new[] { 4, 5, 6, 7 }, w[1].Continuation);
        Assert.Equal(new[] { 5, 6, 7 }, w[2].Context);
        Assert.Equal(new[] { 8, 9 }, w[2].Continuation);
    }

    [Fact]
    public void RollingWindows_HarnessUnitTestCase_SameWindowsAfterMakeDisjoint()
    {
        // lm-evaluation-harness tests/test_utils.py test_get_rolling_token_windows_v1: 34 tokens, max_seq_len 10,
        // context_len 1, prefix -100. Gold (input, pred) pairs: ([-100, 0..8], [0..9]), ([9..18], [10..19]),
        // ([19..28], [20..29]), ([23..32], [30..33]); make_disjoint_window keeps input[: len - (len(pred) - 1)].
        var w = Perplexity.RollingWindows(Enumerable.Range(0, 34).ToArray(), prefixToken: -100, maxLength: 10).ToArray();

        Assert.Equal(4, w.Length);
        Assert.Equal(new[] { -100 }, w[0].Context);
        Assert.Equal(Enumerable.Range(0, 10), w[0].Continuation);
        Assert.Equal(new[] { 9 }, w[1].Context);
        Assert.Equal(Enumerable.Range(10, 10), w[1].Continuation);
        Assert.Equal(new[] { 19 }, w[2].Context);
        Assert.Equal(Enumerable.Range(20, 10), w[2].Continuation);
        Assert.Equal(Enumerable.Range(23, 7), w[3].Context);
        Assert.Equal(Enumerable.Range(30, 4), w[3].Continuation);
    }

    [Theory]
    [InlineData(1, 3)]
    [InlineData(7, 3)]
    [InlineData(9, 3)]
    [InlineData(20, 1)]
    public void RollingWindows_AnyLength_EveryTokenPredictedOnceWithinMaxLength(int n, int max)
    {
        var tokens = Enumerable.Range(100, n).ToArray();
        var w = Perplexity.RollingWindows(tokens, 0, max).ToArray();
        Assert.Equal(tokens, w.SelectMany(x => x.Continuation));
        Assert.All(w, x => Assert.True(x.Context.Count + x.Continuation.Count <= max + 1));
    }

    [Fact]
    public void Compute_TwoWindows_EqualsHandComputedFigures()
    {
        var tok = new GreedyTestTokenizer();
        var model = new TableLm(tok.VocabSize, 4, seed: 12);
        const string text = "ab cd!"; // 6 bytes, 6 tokens, 2 words
        var t = Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();

        var r = Perplexity.Compute(model, tok, text, batchSize: 2);

        // Window 1: row [BOS, t0, t1, t2] predicts t0..t3. Window 2: row [t1, t2, t3, t4] predicts t4 (pos 2), t5 (pos 3).
        var l1 = model.ReferenceRowLogits([tok.BosId, t[0], t[1], t[2]]);
        var l2 = model.ReferenceRowLogits([t[1], t[2], t[3], t[4]]);
        var ll = Enumerable.Range(0, 4).Sum(i => TableLm.LogSoftmaxAt(l1[i], t[i]))
               + TableLm.LogSoftmaxAt(l2[2], t[4]) + TableLm.LogSoftmaxAt(l2[3], t[5]);
        Assert.Equal(ll, r.LogLikelihood, 1e-9);
        Assert.Equal(6, r.Tokens);
        Assert.Equal(2, r.Words);
        Assert.Equal(6, r.Bytes);
        Assert.Equal(-ll / 6, r.LossPerToken, 1e-9);
        Assert.Equal(Math.Exp(-ll / 6), r.TokenPerplexity, 1e-9);
        Assert.Equal(Math.Exp(-ll / 2), r.WordPerplexity, 1e-9);
        Assert.Equal(-ll / 6 / Math.Log(2), r.BitsPerByte, 1e-9);
    }

    [Fact]
    public void ComputeFile_SampleText_FiniteFigures()
    {
        var tok = new GreedyTestTokenizer();
        var model = new TinyAttentionLm(tok.VocabSize, 64, seed: 2);
        var r = Perplexity.ComputeFile(model, tok, EvaluatorTests.Sample("perplexity.txt"), batchSize: 4);
        Assert.True(r.Tokens > 200);
        Assert.True(double.IsFinite(r.BitsPerByte) && r.BitsPerByte > 0);
        // A random 258-way model is near uniform: about log2(258) = 8 bits per byte, give or take.
        Assert.InRange(r.BitsPerByte, 4, 16);
    }

    [SharedDataFact("models/stories260K/tok512.model")]
    public void Compute_TwoTokenizersOneText_BitsPerByteDivideByTheSameUtf8ByteCount()
    {
        // bits per byte compares models with different tokenizers only if the denominator is the text's own UTF-8
        // length: the SentencePiece tokenizer drops the leading, trailing and repeated spaces and adds a dummy-prefix
        // space, the byte tokenizer keeps every byte, and both must still divide by the same count.
        const string text = "  Once upon a   time, a café   ";
        var sp = Tokenizers.TokenizerFiles.Tok512;
        var bytes = new GreedyTestTokenizer(" the", "on");
        var spIds = sp.Encode(text, addBos: false, addEos: false);
        var byteIds = bytes.Encode(text, addBos: false, addEos: false);
        Assert.NotEqual(spIds.Count, byteIds.Count);
        Assert.NotEqual(Encoding.UTF8.GetByteCount(sp.Decode(spIds)), Encoding.UTF8.GetByteCount(text)); // spaces were dropped

        var a = Perplexity.Compute(new TableLm(sp.VocabSize, 8, seed: 1), sp, text, batchSize: 2);
        var b = Perplexity.Compute(new TableLm(bytes.VocabSize, 8, seed: 1), bytes, text, batchSize: 2);

        Assert.Equal(32, Encoding.UTF8.GetByteCount(text));
        Assert.Equal((32, 32), (a.Bytes, b.Bytes));
        Assert.Equal((spIds.Count, byteIds.Count), (a.Tokens, b.Tokens));
        Assert.Equal(-a.LogLikelihood / 32 / Math.Log(2), a.BitsPerByte, 1e-12);
        Assert.Equal(-b.LogLikelihood / 32 / Math.Log(2), b.BitsPerByte, 1e-12);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(40)]
    [InlineData(10_000)]
    public void Passages_AnyMinimum_CoverTheTextExactlyAndCutOnlyAfterBlankLines(int minBytes)
    {
        const string text = "A:\nfirst speech.\n\nB:\nsecond, longer speech here.\n\n\nC:\nthird.\n\nD:\nlast one, no newline";

        var passages = Perplexity.Passages(text, minBytes);

        Assert.Equal(text, string.Concat(passages));
        Assert.All(passages.SkipLast(1), p => Assert.EndsWith("\n\n", p, StringComparison.Ordinal));
        Assert.All(passages.Skip(1), p => Assert.NotEqual('\n', p[0])); // a run of blank lines stays with the paragraph before it
        if (Encoding.UTF8.GetByteCount(text) >= minBytes)
            Assert.All(passages, p => Assert.True(Encoding.UTF8.GetByteCount(p) >= minBytes, $"'{p}' is shorter than {minBytes} bytes"));
        else Assert.Single(passages);
        if (minBytes == 1) Assert.Equal(4, passages.Count);
    }

    [Fact]
    public void ComputePassages_ThreePassages_EachEqualsScoringItAlone()
    {
        var tok = new GreedyTestTokenizer();
        var model = new TableLm(tok.VocabSize, 4, seed: 5);
        string[] passages = ["ab cd\n\n", "efg hij k\n\n", "lm"];

        var together = Perplexity.ComputePassages(model, tok, passages, batchSize: 3);

        Assert.Equal(3, together.Count);
        for (var i = 0; i < passages.Length; i++)
        {
            var alone = Perplexity.Compute(model, tok, passages[i], batchSize: 1);
            Assert.Equal(alone.Tokens, together[i].Tokens);
            Assert.Equal(alone.Bytes, together[i].Bytes);
            // The same windows scored in another batch: float32 log-softmax per token, summed in double; the rows are
            // identical, so only the batch composition differs (a few ulps of a float32 logit per token).
            Assert.Equal(alone.LogLikelihood, together[i].LogLikelihood, 1e-4 * alone.Tokens);
        }
    }
}
