// Percentile bootstrap intervals for corpus-level language-model metrics. A held-out text is cut into units (passages,
// see Perplexity.Passages); each unit contributes a negative log-likelihood (nats) and a count (tokens, or bytes).
// The metric of a set of units is a function of the two sums: token perplexity exp(sum nll / sum tokens), bits per
// byte sum nll / (sum bytes * ln 2), mean NLL per token sum nll / sum tokens (the teacher's NLL of sampled completions,
// whose units are prompts: TeacherNll). A bootstrap replicate draws n units with replacement and recomputes the metric;
// the 95% interval is the 2.5% and 97.5% quantiles of the replicates (Efron & Tibshirani, An Introduction to the
// Bootstrap, 1993, ch. 13). The paired comparison of two models scored on the same units uses the SAME draw for both
// and takes metric(arm) / metric(baseline) - 1 per replicate, so the variation of the units' difficulty, shared by both
// models, cancels (the interval is of the difference, not of two independent values).
// The draws come from System.Random with a fixed seed, whose seeded sequence is the same on every machine and runtime,
// so a report's intervals are reproducible.

namespace SharpTune.Eval;

/// <summary>A corpus metric computed from the sums of per-unit negative log-likelihoods and counts.</summary>
public enum CorpusMetric
{
    /// <summary>exp(sum nll / sum tokens): the counts are tokens.</summary>
    TokenPerplexity,

    /// <summary>sum nll / (sum bytes · ln 2): the counts are UTF-8 bytes.</summary>
    BitsPerByte,

    /// <summary>sum nll / sum tokens, nats per token: the counts are tokens.</summary>
    MeanNll,
}

/// <summary>A point estimate with its 95% percentile-bootstrap interval.</summary>
/// <param name="Value">The metric over all units.</param>
/// <param name="Low">2.5% quantile of the replicates.</param>
/// <param name="High">97.5% quantile of the replicates.</param>
public sealed record Estimate(double Value, double Low, double High);

/// <summary>Percentile bootstrap over units.</summary>
public static class Bootstrap
{
    /// <summary>Replicates used by the study reports.</summary>
    public const int DefaultReplicates = 2000;

    /// <summary>The seed of the draws (any fixed value: it makes intervals reproducible).</summary>
    public const int DefaultSeed = 20240917;

    /// <summary>The metric of the units' sums.</summary>
    public static double Value(CorpusMetric metric, double nll, double count) => metric switch
    {
        CorpusMetric.TokenPerplexity => Math.Exp(nll / count),
        CorpusMetric.BitsPerByte => nll / count / Math.Log(2),
        CorpusMetric.MeanNll => nll / count,
        _ => throw new ArgumentOutOfRangeException(nameof(metric), metric, "unknown metric"),
    };

    /// <summary>
    /// <paramref name="replicates"/> draws of <paramref name="units"/> indices with replacement; the same seed gives
    /// the same draws, which is what pairs two models' intervals.
    /// </summary>
    public static int[][] Draws(int units, int replicates = DefaultReplicates, int seed = DefaultSeed)
    {
        if (units < 1) throw new ArgumentOutOfRangeException(nameof(units), units, "need at least one unit");
        if (replicates < 1) throw new ArgumentOutOfRangeException(nameof(replicates), replicates, "need at least one replicate");
        var random = new Random(seed);
        var draws = new int[replicates][];
        for (var r = 0; r < replicates; r++)
        {
            var d = new int[units];
            for (var i = 0; i < units; i++) d[i] = random.Next(units);
            draws[r] = d;
        }
        return draws;
    }

    /// <summary>The metric of the units and its interval.</summary>
    public static Estimate Of(CorpusMetric metric, IReadOnlyList<double> nll, IReadOnlyList<double> counts, int[][] draws)
    {
        Check(nll, counts, draws);
        var values = draws.Select(d => Value(metric, Sum(nll, d), Sum(counts, d))).ToArray();
        return new Estimate(Value(metric, nll.Sum(), counts.Sum()), Quantile(values, 0.025), Quantile(values, 0.975));
    }

    /// <summary>
    /// metric(arm) / metric(baseline) - 1 on the same units, and its paired interval: each replicate applies one draw
    /// to both models. The two models may count differently (tokens of two tokenizers) when the metric allows it
    /// (bits per byte counts bytes, the same for both).
    /// </summary>
    public static Estimate Relative(CorpusMetric metric, IReadOnlyList<double> armNll, IReadOnlyList<double> armCounts,
        IReadOnlyList<double> baseNll, IReadOnlyList<double> baseCounts, int[][] draws)
    {
        if (armNll.Count != baseNll.Count)
            throw new ArgumentException($"a paired comparison needs the same units: the arm has {armNll.Count}, the baseline {baseNll.Count}");
        Check(armNll, armCounts, draws);
        Check(baseNll, baseCounts, draws);
        var values = draws.Select(d => Value(metric, Sum(armNll, d), Sum(armCounts, d)) / Value(metric, Sum(baseNll, d), Sum(baseCounts, d)) - 1).ToArray();
        var point = Value(metric, armNll.Sum(), armCounts.Sum()) / Value(metric, baseNll.Sum(), baseCounts.Sum()) - 1;
        return new Estimate(point, Quantile(values, 0.025), Quantile(values, 0.975));
    }

    /// <summary>The q-quantile with linear interpolation between order statistics (R's type 7, numpy's default).</summary>
    public static double Quantile(IReadOnlyList<double> values, double q)
    {
        if (values.Count == 0) throw new ArgumentException("no values", nameof(values));
        if (q is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(q), q, "a quantile is in [0, 1]");
        var sorted = values.Order().ToArray();
        var h = (sorted.Length - 1) * q;
        var lo = (int)Math.Floor(h);
        var hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    private static double Sum(IReadOnlyList<double> values, int[] draw)
    {
        var s = 0.0;
        foreach (var i in draw) s += values[i];
        return s;
    }

    private static void Check(IReadOnlyList<double> nll, IReadOnlyList<double> counts, int[][] draws)
    {
        if (nll.Count != counts.Count) throw new ArgumentException($"{nll.Count} log-likelihoods but {counts.Count} counts");
        if (nll.Count == 0) throw new ArgumentException("no units");
        if (draws.Length == 0 || draws.Any(d => d.Length != nll.Count))
            throw new ArgumentException($"the draws must each hold {nll.Count} unit indices (one per unit)");
        if (counts.Any(c => !(c > 0))) throw new ArgumentException("every unit needs a positive count (tokens or bytes)");
    }
}
