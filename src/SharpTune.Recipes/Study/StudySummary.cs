// The study's answer: each evaluated arm's held-out metric with a 95% bootstrap interval over passages, and its paired
// change against the baseline arm with the paired interval (the same resampled passages for both, so the passages'
// shared difficulty cancels). Built from the arms' eval/perplexity_passages.jsonl (the evaluate recipe with
// passage_bytes set); written to report/summary.json and said in one sentence at the top of the report:
//   {"baseline": ARM, "metric": M, "arms": {ARM: {"perplexity": x, "ci95": [lo, hi], "rel_to_baseline": d, "rel_ci95": [lo, hi]}}}
// ("perplexity" is "bits_per_byte" when the study's metric is bits per byte; rel_to_baseline = value / baseline - 1.)
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpTune.Checkpointing;
using SharpTune.Eval;

namespace SharpTune.Recipes.Study;

/// <summary>One arm in the summary.</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="Label">Its label (or the name).</param>
/// <param name="Reference">A reference arm (never the headline's answer).</param>
/// <param name="Value">The metric with its interval.</param>
/// <param name="Relative">Paired value / baseline - 1 with its interval; null for the baseline.</param>
/// <param name="Sample">The arm's generation sample (eval/sample.txt), or null.</param>
public sealed record SummaryArm(string Arm, string Label, bool Reference, Estimate Value, Estimate? Relative, string? Sample);

/// <summary>The study's summary.</summary>
/// <param name="Metric">token_perplexity or bits_per_byte.</param>
/// <param name="Baseline">The baseline arm.</param>
/// <param name="Passages">Units resampled.</param>
/// <param name="Arms">Evaluated arms with scores, in plan order.</param>
public sealed record StudySummary(string Metric, string Baseline, int Passages, IReadOnlyList<SummaryArm> Arms)
{
    /// <summary>The file the summary is written to, in the report folder.</summary>
    public const string FileName = "summary.json";

    /// <summary>The summary of the finished arms; null when the baseline or no other arm has passage scores.</summary>
    public static StudySummary? Build(StudyPlan plan)
    {
        if (plan.Baseline is null) return null;
        var scored = new List<(PlannedArm Arm, IReadOnlyList<PassageScore> Scores)>();
        foreach (var arm in plan.Arms.Where(a => a.Evaluate && ArmMarker.TryRead(a.ArmDir) is not null))
        {
            var path = PassagesPath(arm);
            if (File.Exists(path)) scored.Add((arm, PassageScore.Read(path)));
        }
        var baseline = scored.FirstOrDefault(s => s.Arm.Name == plan.Baseline);
        if (baseline.Arm is null || scored.Count < 2) return null;
        var metricName = plan.Study.Metric ?? "token_perplexity";
        var metric = metricName == "bits_per_byte" ? CorpusMetric.BitsPerByte : CorpusMetric.TokenPerplexity;
        var draws = Bootstrap.Draws(baseline.Scores.Count);
        var (baseNll, baseCounts) = Columns(baseline.Scores, metric);
        var arms = new List<SummaryArm>();
        foreach (var (arm, scores) in scored)
        {
            if (scores.Count != baseline.Scores.Count || scores.Select(s => s.Bytes).SequenceEqual(baseline.Scores.Select(s => s.Bytes)) is false)
                throw new InvalidDataException($"arm '{arm.Name}' was scored on other passages than the baseline '{plan.Baseline}' " +
                    $"({scores.Count} vs {baseline.Scores.Count} passages in {PassagesPath(arm)}): give every arm the same eval data and passage_bytes");
            var (nll, counts) = Columns(scores, metric);
            var relative = arm.Name == plan.Baseline ? null : Bootstrap.Relative(metric, nll, counts, baseNll, baseCounts, draws);
            var sample = Path.Combine(arm.ArmDir, "eval", Evaluate.SampleFileName);
            arms.Add(new SummaryArm(arm.Name, arm.Label ?? arm.Name, arm.Reference, Bootstrap.Of(metric, nll, counts, draws), relative,
                File.Exists(sample) ? File.ReadAllText(sample) : null));
        }
        return new StudySummary(metricName, baseline.Arm.Name, baseline.Scores.Count, arms);
    }

    /// <summary>Where an arm's passage scores are read from.</summary>
    public static string PassagesPath(PlannedArm arm) => Path.Combine(arm.ArmDir, "eval", PassageScore.FileName);

    /// <summary>The metric in words: "held-out perplexity" or "held-out bits per byte".</summary>
    public string MetricWords => Metric == "bits_per_byte" ? "held-out bits per byte" : "held-out perplexity";

    /// <summary>
    /// The report's first line: the non-reference arm with the lowest paired change, and whether its interval
    /// excludes zero.
    /// </summary>
    public string Headline()
    {
        var baseline = Arms.First(a => a.Arm == Baseline);
        var best = Arms.Where(a => a.Relative is not null && !a.Reference).MinBy(a => a.Relative!.Value);
        if (best is null) return $"Only the baseline ({baseline.Label}) has been scored.";
        var r = best.Relative!;
        var interval = string.Create(CultureInfo.InvariantCulture, $"95% CI {Percent(r.Low)} to {Percent(r.High)}");
        if (r.High < 0)
            return string.Create(CultureInfo.InvariantCulture,
                $"{Capitalize(best.Label)} lowered {MetricWords} by {-r.Value * 100:F1}% ({interval}) against {baseline.Label}.");
        if (r.Low > 0)
            return string.Create(CultureInfo.InvariantCulture,
                $"No arm improved on {baseline.Label}: the best, {best.Label}, raised {MetricWords} by {r.Value * 100:F1}% ({interval}).");
        return string.Create(CultureInfo.InvariantCulture,
            $"No arm improved on {baseline.Label} with an interval excluding zero: the best, {best.Label}, changed {MetricWords} by {Percent(r.Value)} ({interval}).");
    }

    /// <summary>The summary.json text.</summary>
    public string ToJson()
    {
        var key = Metric == "bits_per_byte" ? "bits_per_byte" : "perplexity";
        var arms = new JsonObject();
        foreach (var a in Arms)
        {
            var o = new JsonObject
            {
                ["label"] = a.Label,
                [key] = a.Value.Value,
                ["ci95"] = new JsonArray(a.Value.Low, a.Value.High),
                ["rel_to_baseline"] = a.Relative?.Value ?? 0.0,
                ["rel_ci95"] = a.Relative is { } r ? new JsonArray(r.Low, r.High) : new JsonArray(0.0, 0.0),
            };
            if (a.Reference) o["reference"] = true;
            arms[a.Arm] = o;
        }
        var root = new JsonObject
        {
            ["headline"] = Headline(),
            ["baseline"] = Baseline,
            ["metric"] = Metric,
            ["passages"] = Passages,
            ["bootstrap"] = new JsonObject { ["replicates"] = Bootstrap.DefaultReplicates, ["seed"] = Bootstrap.DefaultSeed, ["interval"] = "percentile, paired for rel_ci95" },
            ["arms"] = arms,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    /// <summary>"12.345 [12.1, 12.6]" for a value, "-7.9% [-9.6%, -6.1%]" for a change.</summary>
    public static string Cell(Estimate e, bool relative) => relative
        ? $"{Percent(e.Value)} [{Percent(e.Low)}, {Percent(e.High)}]"
        : string.Create(CultureInfo.InvariantCulture, $"{e.Value:F3} [{e.Low:F3}, {e.High:F3}]");

    private static string Percent(double x) => string.Create(CultureInfo.InvariantCulture, $"{x * 100:+0.0;-0.0;0.0}%");

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];

    private static (double[] Nll, double[] Counts) Columns(IReadOnlyList<PassageScore> scores, CorpusMetric metric) =>
        ([.. scores.Select(s => -s.LogLikelihood)], [.. scores.Select(s => (double)(metric == CorpusMetric.BitsPerByte ? s.Bytes : s.Tokens))]);
}
