// The teacher-NLL metric of sampled completions: the teacher's score of a fixed completion equals the log-softmax
// computed by hand in doubles from the teacher's logits of each unpadded sequence (so the prompt/completion join, the
// label shift, the right padding of a batch and the per-row sums are checked together); the student's samples are a
// function of the seed; the prompts are evenly spaced held-out windows cut where the dataset's prompts end.
using SharpTune.Data;
using SharpTune.Eval;
using SharpTune.Models.Llama2;
using SharpTune.Modules;
using SharpTune.Native;
using SharpTune.Tests.Data;
using SharpTune.Tokenizers;
using static TorchSharp.torch;

namespace SharpTune.Tests.Eval;

public sealed class TeacherNllTests
{
    public TeacherNllTests() => TorchRuntime.EnsureLoaded();

    private static TransformerDecoder Model(int seed)
    {
        manual_seed(seed);
        return Llama2Models.Tiny(tieEmbeddings: false); // untied: a flatter next-token distribution than a random tied table
    }

    [Fact]
    public void Score_FixedCompletions_EqualsHandLogSoftmaxOfEachUnpaddedSequence()
    {
        // Given a tiny teacher and two prompts with completions of different lengths (the shorter row is padded)
        using var teacher = Model(3);
        teacher.eval();
        int[][] prompts = [[5, 9, 2], [7, 1, 33, 40, 12]];
        IReadOnlyList<int>[] completions = [[11, 60, 4, 4, 18, 27, 3], [8, 2]];

        // When the teacher scores them as one batch
        var scores = TeacherNll.Score(teacher, new ByteTokenizer(), prompts, completions, batchSize: 2); // the ids are given: the tokenizer is not read

        // Then each row's sum is -sum_j log softmax(logits at the position before completion token j)[token j],
        // computed in doubles from the logits of that sequence alone (batch 1, no padding)
        for (var r = 0; r < prompts.Length; r++)
        {
            long[] seq = [.. prompts[r].Concat(completions[r]).Select(t => (long)t)];
            float[] logits;
            using (no_grad())
                logits = teacher.Forward(tensor(seq).unsqueeze(0)).contiguous().data<float>().ToArray(); // [1, s, v]
            var v = teacher.VocabSize;
            double expected = 0, maxAbs = 0;
            for (var j = 0; j < completions[r].Count; j++)
            {
                var row = logits.AsSpan((prompts[r].Length - 1 + j) * v, v).ToArray().Select(x => (double)x).ToArray();
                var max = row.Max();
                var lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
                expected += lse - row[completions[r][j]];
                maxAbs = Math.Max(maxAbs, row.Max(Math.Abs));
            }
            Assert.Equal(completions[r].Count, scores[r].Tokens);
            // The two sides differ only in float32 rounding: the logits of a padded batch vs a single sequence (matmul
            // and softmax sums of at most 64 terms reordered, through 2 layers of ~8 reductions each and the output
            // projection: relative gamma(64) each, on logits of magnitude maxAbs) and the float32 log-softmax; each
            // token's NLL moves by at most twice its logits' error. A misaligned label or a scored pad moves a token by
            // O(1) nats (the log-probs of a 64-token vocabulary spread over ln 64 = 4.2 nats).
            var perToken = 2 * (2 * 8 + 1) * FloatBounds.Gamma(64) * maxAbs * 4 + FloatBounds.Gamma(v) * (maxAbs + Math.Log(v));
            Assert.Equal(expected, scores[r].Nll, completions[r].Count * perToken);
        }
    }

    [Fact]
    public void Sample_SameSeed_SameCompletions_OtherSeedOther()
    {
        using var student = Model(5);
        int[][] prompts = [[3, 4], [10, 20, 30], [1], [63, 2, 5, 7], [9, 9]];
        var options = new GenerationOptions { MaxNewTokens = 12, Temperature = 1.0 };
        var a = TeacherNll.Sample(student, prompts, options, batchSize: 2, seed: 7);
        var b = TeacherNll.Sample(student, prompts, options, batchSize: 2, seed: 7);
        var c = TeacherNll.Sample(student, prompts, options, batchSize: 2, seed: 8);
        Assert.Equal(prompts.Length, a.Count);
        Assert.All(a, x => Assert.Equal(12, x.Count)); // no stop token given: every completion is max_new_tokens long
        Assert.Equal(a.SelectMany(x => x), b.SelectMany(x => x));
        Assert.NotEqual(a.SelectMany(x => x), c.SelectMany(x => x));
    }

    [Fact]
    public void Sample_Greedy_Refused()
    {
        using var student = Model(5);
        var e = Assert.Throws<ArgumentException>(() => TeacherNll.Sample(student, [[1, 2]], new GenerationOptions { MaxNewTokens = 4 }, 1, 0));
        Assert.Contains("temperature must be > 0", e.Message);
    }

    [Fact]
    public void Prompts_CountBelowWindows_EvenlySpacedWindowsCutAtThePrompt()
    {
        // Given 20 characters in windows of 3 prompt + 2 completion tokens: 4 windows (starts 0, 5, 10, 15)
        var text = new string([.. Enumerable.Range(0, 20).Select(i => (char)('a' + i))]);
        var windows = new TextStreamDataset(new FakeChatTokenizer(), [text], 5, addBos: false, addEos: false, promptTokens: 3);
        Assert.Equal(4, windows.Count);
        // When two prompts are asked for, windows 0 and 2 are taken; all four without a count
        var two = TeacherNll.Prompts(windows, 2);
        Assert.Equal([0, 2], two.Select(p => p.Window));
        Assert.Equal(['k', 'l', 'm'], two[1].Prompt);
        Assert.Equal([0, 1, 2, 3], TeacherNll.Prompts(windows, null).Select(p => p.Window));
        Assert.Throws<ArgumentOutOfRangeException>(() => TeacherNll.Prompts(windows, 5));
    }

    [Fact]
    public void CompletionScore_Jsonl_RoundTrips()
    {
        var path = Path.Combine(Path.GetTempPath(), $"sharptune-tnll-{Guid.NewGuid():N}.jsonl");
        try
        {
            CompletionScore[] scores = [new(0, 64, 130.25), new(7, 12, 30.5)];
            File.WriteAllText(path, CompletionScore.ToJsonl(scores));
            Assert.Equal("{\"prompt\":0,\"tokens\":64,\"nll\":130.25}", File.ReadLines(path).First());
            Assert.Equal(scores, CompletionScore.Read(path));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Options_BadValues_NameTheKey()
    {
        var ok = new TeacherNllOptions("t");
        Assert.Null(ok.Problem());
        Assert.Equal("temperature", (ok with { Temperature = 0 }).Problem()!.Value.Key);
        Assert.Equal("num_prompts", (ok with { NumPrompts = 0 }).Problem()!.Value.Key);
        Assert.Equal("top_p", (ok with { TopP = 1.5 }).Problem()!.Value.Key);
    }
}
