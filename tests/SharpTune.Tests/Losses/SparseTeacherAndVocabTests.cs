// Sparse (top-k) teacher forward KL against its definitions, and teacher/student vocabulary alignment.
using SharpTune.Losses;
using TorchSharp;
using static SharpTune.Tests.Losses.LossTestUtil;
using static TorchSharp.torch;

namespace SharpTune.Tests.Losses;

public sealed class SparseTeacherAndVocabTests
{
    [Fact]
    public void SparseForwardKl_TopKIsWholeVocabulary_EqualsDenseForwardKl()
    {
        var g = Seeded(30);
        var s = RandLogits(g, 6, 9);
        var t = RandLogits(g, 6, 9);
        var labels = torch.tensor(new long[] { 1, -100, 2, 3, 4, 5 });
        var (lp, idx) = t.log_softmax(-1).topk(9);
        foreach (var mode in new[] { MissingMass.Zero, MissingMass.Tail })
        {
            var loss = new KdLoss(new DivergenceOptions(), missingMass: mode);
            Close(loss.Forward(s, t, labels), loss.Forward(s, new SparseTeacher(idx, lp), labels), 1e-5, mode.ToString());
        }
    }

    [Fact]
    public void SparseForwardKl_TopK_MatchesDefinitionWithAndWithoutTailBucket()
    {
        var g = Seeded(31);
        var s = RandLogits(g, 4, 12);
        var t = RandLogits(g, 4, 12);
        const int k = 3;
        var (lp, idx) = t.log_softmax(-1).topk(k);
        var zero = SparseKlMath.PerToken(s, idx, lp, 1, MissingMass.Zero);
        var tail = SparseKlMath.PerToken(s, idx, lp, 1, MissingMass.Tail);
        for (var i = 0; i < 4; i++)
        {
            var q = Softmax(Row(s, i), 1);
            var ids = idx[i].data<long>().ToArray();
            var p = lp[i].to(ScalarType.Float64).data<double>().Select(Math.Exp).ToArray();
            var kl = Enumerable.Range(0, k).Sum(j => p[j] * Math.Log(p[j] / q[ids[j]]));
            var pTail = 1 - p.Sum();
            var qTail = Enumerable.Range(0, 12).Where(v => !ids.Contains(v)).Sum(v => q[v]);
            Close(kl, zero[i], 1e-5, $"zero row {i}");
            Close(kl + pTail * Math.Log(pTail / qTail), tail[i], 1e-5, $"tail row {i}");
        }
    }

    [Fact]
    public void SparseForwardKl_ClosedFormGradient_MatchesAutogradAndFiniteDifferences()
    {
        var g = Seeded(32);
        var s0 = RandLogits(g, 3, 7, dtype: ScalarType.Float64);
        var t = RandLogits(g, 3, 7, dtype: ScalarType.Float64);
        var (lp, idx) = t.log_softmax(-1).topk(3);
        lp[0, 2] = torch.tensor(double.NegativeInfinity);                  // an unused slot
        foreach (var mode in new[] { MissingMass.Zero, MissingMass.Tail })
        {
            var s = s0.detach().requires_grad_(true);
            SparseKlMath.PerToken(s, idx, lp, 1.3, mode).sum().backward();
            var (_, closed) = SparseKlMath.PerTokenWithGrad(s0, idx, lp, 1.3, mode);
            Close(s.grad!, closed, 1e-8, $"{mode} closed form vs autograd");
            const double eps = 1e-6;
            using var noGrad = torch.no_grad();
            for (var j = 0; j < 7; j++)
            {
                var plus = s0.clone(); plus[1, j] = plus[1, j] + eps;
                var minus = s0.clone(); minus[1, j] = minus[1, j] - eps;
                var fd = (SparseKlMath.PerToken(plus, idx, lp, 1.3, mode).sum() - SparseKlMath.PerToken(minus, idx, lp, 1.3, mode).sum()) / (2 * eps);
                Close(fd, closed[1, j], 1e-6, $"{mode} finite difference at {j}");
            }
        }
    }

    [Fact]
    public void SparseTeacher_IdOutsideVocabulary_ThrowsNamingRange()
    {
        var s = torch.zeros(2, 5);
        var sparse = new SparseTeacher(torch.tensor(new long[] { 0, 7, 1, 2 }).reshape(2, 2), torch.zeros(2, 2));
        var e = Assert.Throws<ArgumentException>(() => new KdLoss(new DivergenceOptions()).Forward(s, sparse, torch.zeros(2, ScalarType.Int64)));
        Assert.Contains("[0, 5)", e.Message);
    }

    [Fact]
    public void TruncateTeacher_PaddedBeyondStudent_KeepsSharedIdsOnly()
    {
        // Qwen2.5 7B/14B (152,064 logits) teaching 3B (151,936); the tokenizer emits 151,665 ids.
        Assert.Equal(151_936, VocabAlignment.SharedVocab(151_936, 152_064, tokenizerVocab: 151_665));
        var logits = torch.arange(2 * 12, dtype: ScalarType.Float32).reshape(2, 12);
        var cut = VocabAlignment.TruncateTeacher(logits, 10, id => id < 9);
        Close(logits.narrow(1, 0, 10), cut, 0, "kept columns");
        var weight = torch.randn(12, 4);
        Assert.Equal(new long[] { 10, 4 }, VocabAlignment.TruncateTeacher(weight, 10, id => id < 9, dim: 0).shape);
    }

    [Fact]
    public void TruncateTeacher_RealMismatch_ThrowsNamingBothSizes()
    {
        var e = Assert.Throws<ArgumentException>(() => VocabAlignment.SharedVocab(128_256, 151_936, id => true));
        Assert.Contains("151936", e.Message);
        Assert.Contains("128256", e.Message);
        var smaller = Assert.Throws<ArgumentException>(() => VocabAlignment.SharedVocab(151_936, 128_256, id => false));
        Assert.Contains("128256", smaller.Message);
        Assert.Contains("151936", smaller.Message);
        var tok = Assert.Throws<ArgumentException>(() => VocabAlignment.SharedVocab(100, 120, tokenizerVocab: 110));
        Assert.Contains("110", tok.Message);
    }
}
