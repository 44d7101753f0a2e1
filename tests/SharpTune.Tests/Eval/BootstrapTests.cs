// The percentile bootstrap of corpus metrics: the quantile rule, reproducible draws, point estimates equal to the
// direct sums, an interval that matches normal theory for a mean, and a paired interval that removes what two models
// share.
using SharpTune.Eval;

namespace SharpTune.Tests.Eval;

public sealed class BootstrapTests
{
    [Theory]
    [InlineData(0.0, 1.0)]
    [InlineData(0.25, 1.75)] // numpy.quantile([1, 2, 3, 4], 0.25) = 1.75 (linear, type 7)
    [InlineData(0.5, 2.5)]
    [InlineData(0.975, 3.925)]
    [InlineData(1.0, 4.0)]
    public void Quantile_FourValues_NumpyLinearRule(double q, double expected) =>
        Assert.Equal(expected, Bootstrap.Quantile([4.0, 1.0, 3.0, 2.0], q), 12);

    [Fact]
    public void Draws_SameSeed_SameIndices_OtherSeedOther()
    {
        var a = Bootstrap.Draws(50, 20, seed: 7);
        var b = Bootstrap.Draws(50, 20, seed: 7);
        var c = Bootstrap.Draws(50, 20, seed: 8);
        Assert.Equal(a.SelectMany(x => x), b.SelectMany(x => x));
        Assert.NotEqual(a.SelectMany(x => x), c.SelectMany(x => x));
        Assert.All(a.SelectMany(x => x), i => Assert.InRange(i, 0, 49));
    }

    [Fact]
    public void Of_Perplexity_PointIsExpOfSummedNllOverSummedTokens()
    {
        double[] nll = [10, 20, 5];
        double[] tokens = [4, 9, 3];
        var e = Bootstrap.Of(CorpusMetric.TokenPerplexity, nll, tokens, Bootstrap.Draws(3, 200));
        Assert.Equal(Math.Exp(35.0 / 16), e.Value, 12);
        Assert.True(e.Low <= e.High);
    }

    [Fact]
    public void Of_MeanNll_PointIsSummedNllOverSummedTokens()
    {
        // Teacher NLL of completions of different lengths: a token-weighted mean, not a mean of per-prompt means
        double[] nll = [128, 10, 60];
        double[] tokens = [64, 2, 30];
        var e = Bootstrap.Of(CorpusMetric.MeanNll, nll, tokens, Bootstrap.Draws(3, 200));
        Assert.Equal(198.0 / 96, e.Value, 12);
        Assert.InRange(e.Low, 2.0, e.Value); // every replicate is a token-weighted mean of 2.0, 5.0 and 2.0 per token
        Assert.InRange(e.High, e.Value, 5.0);
    }

    [Fact]
    public void Of_MeanOfManyUnits_IntervalMatchesNormalTheory()
    {
        // Bits per byte with one byte per unit is the mean nll / ln 2: its 95% interval is mean ± 1.96 sd/sqrt(n)
        // (times sqrt((n-1)/n) for the bootstrap's plug-in variance). 2000 replicates estimate the 2.5% and 97.5%
        // quantiles to within a few percent of the width, so a 10% band can only fail if the resampling is wrong.
        const int n = 400;
        var nll = Enumerable.Range(0, n).Select(i => (i * 7919 % 1000) / 1000.0 + (i % 3)).ToArray();
        var bytes = Enumerable.Repeat(1.0, n).ToArray();
        var mean = nll.Average();
        var sd = Math.Sqrt(nll.Sum(x => (x - mean) * (x - mean)) / n);
        var halfWidth = 1.96 * sd / Math.Sqrt(n) / Math.Log(2);

        var e = Bootstrap.Of(CorpusMetric.BitsPerByte, nll, bytes, Bootstrap.Draws(n));

        Assert.Equal(mean / Math.Log(2), e.Value, 12);
        Assert.InRange((e.High - e.Low) / 2 / halfWidth, 0.9, 1.1);
        Assert.InRange((e.High + e.Low) / 2, e.Value - 0.1 * halfWidth, e.Value + 0.1 * halfWidth);
    }

    [Fact]
    public void Relative_ArmIsBaselinePlusConstantNatsPerToken_PairedIntervalHasNoWidth()
    {
        // arm nll = baseline nll + d per token on every unit: perplexity(arm) / perplexity(base) = exp(d) on any
        // resample, so the paired interval collapses to the point, while each model's own interval is wide (the
        // units differ a lot in difficulty). An unpaired comparison would see mostly that shared variation.
        const int n = 100;
        const double d = -0.05;
        var tokens = Enumerable.Range(0, n).Select(i => 50.0 + i % 17).ToArray();
        var baseNll = tokens.Select((t, i) => t * (2.0 + (i * 37 % 11) / 5.0)).ToArray();
        var armNll = baseNll.Select((x, i) => x + d * tokens[i]).ToArray();
        var draws = Bootstrap.Draws(n);

        var rel = Bootstrap.Relative(CorpusMetric.TokenPerplexity, armNll, tokens, baseNll, tokens, draws);
        var own = Bootstrap.Of(CorpusMetric.TokenPerplexity, baseNll, tokens, draws);

        Assert.Equal(Math.Exp(d) - 1, rel.Value, 12);
        Assert.Equal(rel.Value, rel.Low, 12);
        Assert.Equal(rel.Value, rel.High, 12);
        Assert.True((own.High - own.Low) / own.Value > 0.05, $"the baseline's own interval should be wide: {own}");
    }

    [Fact]
    public void Relative_DifferentUnitCounts_Throws()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            Bootstrap.Relative(CorpusMetric.BitsPerByte, [1, 2], [1, 1], [1, 2, 3], [1, 1, 1], Bootstrap.Draws(2, 10)));
        Assert.Contains("units", e.Message, StringComparison.Ordinal);
    }
}
