// Measures shared-context scoring against separate scoring on hellaswag-shaped requests (one context of ~64 tokens,
// four endings of 20-32 tokens, Llama-3-tokenizer-like lengths) with a float32 attention model, and checks the
// log-likelihoods agree. Prints the speed-up but does not assert on it; marked Slow because it does real work.
using System.Diagnostics;
using SharpTune.Eval;
using TorchSharp;
using Xunit.Abstractions;

namespace SharpTune.Tests.Eval;

public sealed class SharedContextBenchmarkTests(ITestOutputHelper output)
{
    [Fact]
    [Trait("Category", "Slow")]
    public void ScoreEncoded_HellaSwagShapedDocs_SharedEqualsSeparateAndReportsSpeedUp()
    {
        var model = new TinyAttentionLm(vocab: 2048, maxSeqLen: 512, dim: 256, seed: 4, dtype: torch.ScalarType.Float32);
        var rng = new Random(7);
        int[] R(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(2048)).ToArray();
        var requests = new List<EncodedRequest>();
        for (var doc = 0; doc < 24; doc++)
        {
            var ctx = R(48 + rng.Next(32));
            for (var c = 0; c < 4; c++) requests.Add(new EncodedRequest(ctx, R(20 + rng.Next(13))));
        }
        var tok = new GreedyTestTokenizer();
        var separate = new LoglikelihoodScorer(model, tok, batchSize: 8, sharedContext: false);
        var shared = new LoglikelihoodScorer(model, tok, batchSize: 8, sharedContext: true);
        separate.ScoreEncoded(requests.Take(8).ToArray()); // warm-up
        shared.ScoreEncoded(requests.Take(8).ToArray());

        double Time(LoglikelihoodScorer s, out IReadOnlyList<LoglikelihoodResult> r)
        {
            var best = double.MaxValue;
            r = [];
            for (var rep = 0; rep < 2; rep++)
            {
                var clock = Stopwatch.StartNew();
                r = s.ScoreEncoded(requests);
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return best;
        }

        var tSeparate = Time(separate, out var rSeparate);
        var tShared = Time(shared, out var rShared);
        var maxDiff = rSeparate.Zip(rShared).Max(p => Math.Abs(p.First.LogLikelihood - p.Second.LogLikelihood));
        var meanLl = rSeparate.Average(r => Math.Abs(r.LogLikelihood));

        output.WriteLine($"separate {tSeparate:F3}s, shared {tShared:F3}s, speed-up {tSeparate / tShared:F2}x; " +
                         $"max |delta ll| {maxDiff:E2} (float32, mean |ll| {meanLl:F1})");
        // No assertion on time: speed is a benchmark's job (machines are noisy); see bench/ and docs/evaluation.md.
        Assert.True(maxDiff < 1e-3 * Math.Max(1, meanLl / 100), $"float32 shared vs separate differ by {maxDiff}");
    }
}
