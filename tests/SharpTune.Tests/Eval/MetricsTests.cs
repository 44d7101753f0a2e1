// Metric arithmetic on hand-computed values (lm_eval/api/task.py process_results, truthfulqa utils.process_results_mc2,
// lm_eval/api/metrics.py mean_stderr).
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class MetricsTests
{
    [Fact]
    public void AccAndAccNorm_LongChoiceWithBetterPerCharScore_Disagree()
    {
        // Given: choice 0 "ab" has ll -4 (-2 per char); choice 1 "abcdefgh" has ll -8 (-1 per char).
        var lls = new[] { -4.0, -8.0 };
        var choices = new[] { "ab", "abcdefgh" };

        // Then: acc picks choice 0, acc_norm picks choice 1.
        Assert.Equal(0.0, Metrics.Accuracy(lls, gold: 1));
        Assert.Equal(1.0, Metrics.NormalizedAccuracy(lls, choices, gold: 1));
        Assert.Equal(1.0, Metrics.Accuracy(lls, gold: 0));
        Assert.Equal(0.0, Metrics.NormalizedAccuracy(lls, choices, gold: 0));
    }

    [Fact]
    public void NormalizedAccuracy_NonBmpCharacters_CountsCodePointsLikePython()
    {
        // "😀😀" is 2 code points (Python len 2) but 4 UTF-16 units.
        // choice 0: -3 / 2 = -1.5; choice 1 "abc": -4 / 3 = -1.33 -> choice 1 under code points.
        // Counting UTF-16 units would give -3 / 4 = -0.75 for choice 0 and pick it instead.
        Assert.Equal(1.0, Metrics.NormalizedAccuracy([-3.0, -4.0], ["😀😀", "abc"], gold: 1));
    }

    [Fact]
    public void ArgMax_Ties_FirstIndexLikeNumpy()
    {
        Assert.Equal(1, Metrics.ArgMax([0.0, 2.0, 2.0, 1.0]));
    }

    [Fact]
    public void TruthfulQaMc2_SeveralTrueAnswers_NormalisedTrueMass()
    {
        // p = 1, 2, 3, 4 (unnormalised); the first three are true: (1 + 2 + 3) / 10 = 0.6.
        var lls = new[] { Math.Log(1), Math.Log(2), Math.Log(3), Math.Log(4) };
        Assert.Equal(0.6, Metrics.TruthfulQaMc2(lls, [1, 1, 1, 0]), 12);
    }

    [Fact]
    public void TruthfulQaMc2_OneTrueAnswer_ItsShare()
    {
        // exp(-1) / (exp(-1) + exp(-2)) = 1 / (1 + e^-1) = 0.7310585786300049
        Assert.Equal(0.7310585786300049, Metrics.TruthfulQaMc2([-1.0, -2.0], [1, 0]), 12);
    }

    [Fact]
    public void TruthfulQaMc2_NoFalseAnswer_Throws()
    {
        Assert.Throws<ArgumentException>(() => Metrics.TruthfulQaMc2([-1.0, -2.0], [1, 1]));
    }

    [Fact]
    public void MeanStderr_FourValues_SampleStdOverSqrtN()
    {
        // mean 0.75; sample variance ((3 * 0.0625) + 0.5625) / 3 = 0.25; std 0.5; stderr 0.5 / 2 = 0.25.
        double[] values = [1, 0, 1, 1];
        Assert.Equal(0.75, Metrics.Mean(values), 12);
        Assert.Equal(0.5, Metrics.SampleStdDev(values), 12);
        Assert.Equal(0.25, Metrics.MeanStderr(values), 12);
    }

    [Fact]
    public void MeanStderr_OneValue_NaN()
    {
        Assert.True(double.IsNaN(Metrics.MeanStderr([1.0])));
    }
}
