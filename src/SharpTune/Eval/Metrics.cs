// Multiple-choice metrics and aggregation exactly as lm-evaluation-harness computes them.
// References: lm_eval/api/task.py (ConfigurableTask.process_results, output_type multiple_choice: acc = argmax(lls),
// acc_norm = argmax(lls / len(choice)) with len counted in characters of the choice string, without the target
// delimiter); lm_eval/tasks/truthfulqa/utils.py (process_results_mc2); lm_eval/api/metrics.py (mean,
// sample_stddev, mean_stderr).
namespace SharpTune.Eval;

/// <summary>Per-document metric arithmetic and the harness's mean / standard error.</summary>
public static class Metrics
{
    /// <summary>Index of the largest value; the first one on ties, as numpy.argmax.</summary>
    public static int ArgMax(IReadOnlyList<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("argmax of an empty list", nameof(values));
        var best = 0;
        for (var i = 1; i < values.Count; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary><c>acc</c>: 1 when the choice with the highest log-likelihood is the gold one.</summary>
    public static double Accuracy(IReadOnlyList<double> logLikelihoods, int gold) =>
        ArgMax(logLikelihoods) == gold ? 1.0 : 0.0;

    /// <summary>
    /// <c>acc_norm</c>: 1 when the choice with the highest log-likelihood per character of the choice string is gold.
    /// </summary>
    /// <param name="logLikelihoods">One log-likelihood per choice.</param>
    /// <param name="choices">The choice strings as doc_to_choice returns them (no target delimiter).</param>
    /// <param name="gold">Index of the correct choice.</param>
    public static double NormalizedAccuracy(IReadOnlyList<double> logLikelihoods, IReadOnlyList<string> choices, int gold)
    {
        if (logLikelihoods.Count != choices.Count)
            throw new ArgumentException($"{logLikelihoods.Count} log-likelihoods for {choices.Count} choices", nameof(choices));
        // Python len() counts code points; a .NET string length counts UTF-16 units, so count runes.
        var normalized = logLikelihoods.Select((ll, i) => ll / choices[i].EnumerateRunes().Count()).ToArray();
        return ArgMax(normalized) == gold ? 1.0 : 0.0;
    }

    /// <summary>
    /// TruthfulQA MC2: the probability mass of the true answers, normalised over all choices. As the harness does,
    /// the choices before the first label 0 are the true ones (the dataset lists true answers first).
    /// </summary>
    public static double TruthfulQaMc2(IReadOnlyList<double> logLikelihoods, IReadOnlyList<int> labels)
    {
        if (logLikelihoods.Count != labels.Count)
            throw new ArgumentException($"{logLikelihoods.Count} log-likelihoods for {labels.Count} labels", nameof(labels));
        var split = labels.ToList().IndexOf(0);
        if (split < 0) throw new ArgumentException("mc2 labels contain no 0 (no false answer)", nameof(labels));
        // Plain exp, as the harness: when every choice underflows to 0 both return NaN rather than a made-up value.
        var p = logLikelihoods.Select(Math.Exp).ToArray();
        var total = p.Sum();
        return p.Take(split).Sum() / total;
    }

    /// <summary>Arithmetic mean.</summary>
    public static double Mean(IReadOnlyList<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("mean of an empty list", nameof(values));
        return values.Sum() / values.Count;
    }

    /// <summary>Sample standard deviation (n - 1 in the denominator), the harness's <c>sample_stddev</c>.</summary>
    public static double SampleStdDev(IReadOnlyList<double> values)
    {
        if (values.Count < 2) return double.NaN;
        var mu = Mean(values);
        return Math.Sqrt(values.Sum(x => (x - mu) * (x - mu)) / (values.Count - 1));
    }

    /// <summary>Standard error of the mean, the harness's <c>mean_stderr</c>: sample std / sqrt(n); NaN below 2 items.</summary>
    public static double MeanStderr(IReadOnlyList<double> values) =>
        values.Count < 2 ? double.NaN : SampleStdDev(values) / Math.Sqrt(values.Count);
}
