// Log-likelihood scoring against hand-computed references and the harness's encoding rules
// (lm_eval/api/model.py _encode_pair, lm_eval/models/huggingface.py _loglikelihood_tokens).
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class LoglikelihoodScorerTests
{
    private static readonly GreedyTestTokenizer Tok = new(" A", "Answer", "bc");

    [Fact]
    public void Encode_ContextEndsWithSpace_SpaceMovesToContinuation()
    {
        var scorer = new LoglikelihoodScorer(new TableLm(Tok.VocabSize, 64, 1), Tok);

        var enc = scorer.Encode(new LoglikelihoodRequest("Answer: ", "A"));

        // "Answer:" + " A": the space travels with the continuation and merges into the " A" piece.
        Assert.Equal(new[] { Tok.PieceId("Answer"), (int)':' }, enc.Context);
        Assert.Equal(new[] { Tok.PieceId(" A") }, enc.Continuation);
    }

    [Fact]
    public void MoveTrailingWhitespace_SeveralWhitespaceChars_AllMove()
    {
        var (ctx, cont) = LoglikelihoodScorer.MoveTrailingWhitespace("Q:\n \t", "x");
        Assert.Equal("Q:", ctx);
        Assert.Equal("\n \tx", cont);
    }

    [Fact]
    public void Encode_PieceMergesAcrossBoundary_ContinuationIsWholeAfterContextLength()
    {
        var scorer = new LoglikelihoodScorer(new TableLm(Tok.VocabSize, 64, 1), Tok);

        var enc = scorer.Encode(new LoglikelihoodRequest("ab", "cd"));

        // whole "abcd" = [a, bc, d]; context "ab" = [a, b] has 2 ids, so the continuation is whole[2:] = [d].
        Assert.Equal(new[] { (int)'a', (int)'b' }, enc.Context);
        Assert.Equal(new[] { (int)'d' }, enc.Continuation);
    }

    [Fact]
    public void Encode_EmptyContext_ConditionsOnBos()
    {
        var scorer = new LoglikelihoodScorer(new TableLm(Tok.VocabSize, 64, 1), Tok);
        var enc = scorer.Encode(new LoglikelihoodRequest("", "hi"));
        Assert.Equal(new[] { Tok.BosId }, enc.Context);
        Assert.Equal(new[] { (int)'h', (int)'i' }, enc.Continuation);
    }

    [Fact]
    public void ScoreEncoded_ShortRequest_EqualsHandComputedSum()
    {
        var model = new TableLm(12, 16, seed: 3);
        var scorer = new LoglikelihoodScorer(model, Tok, batchSize: 1, sharedContext: false);
        var req = new EncodedRequest([1, 5, 7], [2, 9]);

        var result = scorer.ScoreEncoded([req])[0];

        // Row [1, 5, 7, 2]: logits at position 2 predict 2, at position 3 predict 9.
        var logits = model.ReferenceRowLogits([1, 5, 7, 2]);
        var expected = TableLm.LogSoftmaxAt(logits[2], 2) + TableLm.LogSoftmaxAt(logits[3], 9);
        Assert.Equal(expected, result.LogLikelihood, 1e-9);
    }

    [Fact]
    public void ScoreEncoded_LongerThanMaxLength_KeepsLastTokens()
    {
        // max length 5; context 6 + continuation 2 = 8 tokens: the harness feeds (all)[-6:][:-1] = tokens 2..6.
        var model = new TableLm(12, 5, seed: 4);
        var scorer = new LoglikelihoodScorer(model, Tok, batchSize: 1, sharedContext: false);
        var req = new EncodedRequest([1, 2, 3, 4, 5, 6], [7, 8]);

        var result = scorer.ScoreEncoded([req])[0];

        var row = new[] { 3, 4, 5, 6, 7 }; // positions 0..4 after truncation
        var logits = model.ReferenceRowLogits(row);
        var expected = TableLm.LogSoftmaxAt(logits[3], 7) + TableLm.LogSoftmaxAt(logits[4], 8);
        Assert.Equal(expected, result.LogLikelihood, 1e-9);
        // Not what the untruncated row would give (positions and context differ).
        var untruncated = new TableLm(12, 16, seed: 4);
        var full = untruncated.ReferenceRowLogits([1, 2, 3, 4, 5, 6, 7]);
        Assert.NotEqual(TableLm.LogSoftmaxAt(full[5], 7) + TableLm.LogSoftmaxAt(full[6], 8), result.LogLikelihood, 6);
    }

    [Fact]
    public void ScoreEncoded_ContinuationLongerThanMaxLength_Throws()
    {
        var scorer = new LoglikelihoodScorer(new TableLm(12, 3, 1), Tok, sharedContext: false);
        var e = Assert.Throws<ArgumentException>(() => scorer.ScoreEncoded([new EncodedRequest([1], [1, 2, 3, 4])]));
        Assert.Contains("more than max length 3", e.Message);
    }

    [Fact]
    public void ScoreEncoded_PaddedBatch_EqualsOneAtATime()
    {
        var model = new TableLm(12, 16, seed: 5);
        var reqs = new[]
        {
            new EncodedRequest([1, 2], [3]),
            new EncodedRequest([4, 5, 6, 7, 8], [9, 10, 11]),
            new EncodedRequest([2], [2, 2]),
            new EncodedRequest([11, 10, 9], [8]),
        };

        var batched = new LoglikelihoodScorer(model, Tok, batchSize: 4, sharedContext: false).ScoreEncoded(reqs);
        var single = new LoglikelihoodScorer(model, Tok, batchSize: 1, sharedContext: false).ScoreEncoded(reqs);

        for (var i = 0; i < reqs.Length; i++) Assert.Equal(single[i].LogLikelihood, batched[i].LogLikelihood, 1e-9);
    }

    [Fact]
    public void ScoreEncoded_ArgmaxContinuation_IsGreedyTrueOtherwiseFalse()
    {
        var model = new TableLm(12, 16, seed: 6);
        var scorer = new LoglikelihoodScorer(model, Tok, sharedContext: false);
        var context = new[] { 1, 2, 3 };
        var best = ArgMax(model.ReferenceRowLogits(context)[2]);
        var worst = ArgMin(model.ReferenceRowLogits(context)[2]);

        var results = scorer.ScoreEncoded([new EncodedRequest(context, [best]), new EncodedRequest(context, [worst])]);

        Assert.True(results[0].IsGreedy);
        Assert.False(results[1].IsGreedy);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void ScoreEncoded_SharedContext_EqualsSeparateTo1e5(int batchSize)
    {
        var model = new TinyAttentionLm(vocab: 40, maxSeqLen: 24, seed: 7);
        var rng = new Random(11);
        int[] R(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(40)).ToArray();
        var requests = new List<EncodedRequest>();
        for (var doc = 0; doc < 5; doc++)
        {
            var ctx = R(3 + doc * 2);
            foreach (var len in new[] { 1, 4, 2, 6 }) requests.Add(new EncodedRequest(ctx, R(len)));
        }
        requests.Add(new EncodedRequest(R(22), R(5)));        // needs truncation: scored as the harness's own row
        requests.Add(new EncodedRequest(R(2), R(3)));         // a lone context
        var big = R(10);
        for (var i = 0; i < 4; i++) requests.Add(new EncodedRequest(big, R(8))); // 10 + 4 * 7 > 24: split into packs

        var separate = new LoglikelihoodScorer(model, Tok, batchSize, sharedContext: false).ScoreEncoded(requests);
        var shared = new LoglikelihoodScorer(model, Tok, batchSize, sharedContext: true).ScoreEncoded(requests);

        for (var i = 0; i < requests.Count; i++)
        {
            Assert.Equal(separate[i].LogLikelihood, shared[i].LogLikelihood, 1e-5);
            Assert.Equal(separate[i].IsGreedy, shared[i].IsGreedy);
        }
    }

    [Fact]
    public void ScoreEncoded_SharedContext_FeedsFewerTokens()
    {
        var rng = new Random(2);
        int[] R(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(40)).ToArray();
        var requests = new List<EncodedRequest>();
        for (var doc = 0; doc < 4; doc++)
        {
            var ctx = R(40);
            for (var c = 0; c < 4; c++) requests.Add(new EncodedRequest(ctx, R(10)));
        }
        var sep = new TinyAttentionLm(40, 128);
        var sha = new TinyAttentionLm(40, 128);

        new LoglikelihoodScorer(sep, Tok, 4, sharedContext: false).ScoreEncoded(requests);
        new LoglikelihoodScorer(sha, Tok, 4, sharedContext: true).ScoreEncoded(requests);

        // Separate: 16 rows of 49 tokens; shared: 4 rows of 40 + 4 * 9 = 76 tokens.
        Assert.Equal(16 * 49, sep.TokensSeen);
        Assert.Equal(4 * 76, sha.TokensSeen);
    }

    [Fact]
    public void Score_Strings_ResultsComeBackInRequestOrder()
    {
        var model = new TableLm(Tok.VocabSize, 64, seed: 8);
        var scorer = new LoglikelihoodScorer(model, Tok, batchSize: 2);
        var requests = new[]
        {
            new LoglikelihoodRequest("a much longer context here", " x"),
            new LoglikelihoodRequest("short", " y"),
            new LoglikelihoodRequest("a much longer context here", " z"),
        };

        var all = scorer.Score(requests);

        for (var i = 0; i < requests.Length; i++)
            Assert.Equal(scorer.Score([requests[i]])[0].LogLikelihood, all[i].LogLikelihood, 1e-9);
    }

    [Fact]
    public void DelegateCausalLm_WrapsForward_SameScores()
    {
        var model = new TableLm(12, 16, seed: 13);
        var wrapped = new DelegateCausalLm(model.Logits, model.MaxSeqLen);
        var req = new EncodedRequest([1, 2, 3], [4, 5]);

        var a = new LoglikelihoodScorer(model, Tok).ScoreEncoded([req])[0];
        var b = new LoglikelihoodScorer(wrapped, Tok).ScoreEncoded([req])[0];

        Assert.Equal(a, b);
        Assert.Equal(16, wrapped.MaxSeqLen);
    }

    private static int ArgMax(double[] v) => Array.IndexOf(v, v.Max());
    private static int ArgMin(double[] v) => Array.IndexOf(v, v.Min());
}
