// The study's answer: each evaluated arm's held-out metric with a 95% bootstrap interval over passages, and its paired
// change against the baseline arm with the paired interval (the same resampled passages for both, so the passages'
// shared difficulty cancels). Built from the arms' eval/perplexity_passages.jsonl (the evaluate recipe with
// passage_bytes set), or with metric teacher_nll from their eval/teacher_nll.jsonl (the teacher's NLL of each held-out
// prompt's sampled completion: the units are prompts); written to report/summary.json and said in one sentence at the
// top of the report:
//   {"baseline": ARM, "metric": M, "arms": {ARM: {"perplexity": x, "ci95": [lo, hi], "rel_to_baseline": d, "rel_ci95": [lo, hi]}}}
// ("perplexity" is "bits_per_byte" or "teacher_nll" (nats per token) with those metrics; rel_to_baseline = value / baseline - 1.)
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
/// <param name="Metric">token_perplexity, bits_per_byte or teacher_nll.</param>
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
        var metricName = plan.Study.Metric ?? "token_perplexity";
        var metric = metricName switch
        {
            "bits_per_byte" => CorpusMetric.BitsPerByte,
            "teacher_nll" => CorpusMetric.MeanNll,
            _ => CorpusMetric.TokenPerplexity,
        };
        var scored = new List<(PlannedArm Arm, Units Units)>();
        foreach (var arm in plan.Arms.Where(a => a.Evaluate && ArmMarker.TryRead(a.ArmDir) is not null))
        {
            var path = UnitsPath(arm, metric);
            if (File.Exists(path)) scored.Add((arm, Read(path, metric)));
        }
        var baseline = scored.FirstOrDefault(s => s.Arm.Name == plan.Baseline);
        if (baseline.Arm is null || scored.Count < 2) return null;
        var draws = Bootstrap.Draws(baseline.Units.Nll.Length);
        var (baseNll, baseCounts, baseKeys) = baseline.Units;
        var unitWords = metric == CorpusMetric.MeanNll ? "prompts" : "passages";
        var arms = new List<SummaryArm>();
        foreach (var (arm, (nll, counts, keys)) in scored)
        {
            if (!keys.SequenceEqual(baseKeys))
                throw new InvalidDataException($"arm '{arm.Name}' was scored on other {unitWords} than the baseline '{plan.Baseline}' " +
                    $"({keys.Length} vs {baseKeys.Length} {unitWords} in {UnitsPath(arm, metric)}): give every arm the same eval data and " +
                    (metric == CorpusMetric.MeanNll ? "teacher_nll settings" : "passage_bytes"));
            var relative = arm.Name == plan.Baseline ? null : Bootstrap.Relative(metric, nll, counts, baseNll, baseCounts, draws);
            var sample = Path.Combine(arm.ArmDir, "eval", Evaluate.SampleFileName);
            arms.Add(new SummaryArm(arm.Name, arm.Label ?? arm.Name, arm.Reference, Bootstrap.Of(metric, nll, counts, draws), relative,
                File.Exists(sample) ? File.ReadAllText(sample) : null));
        }
        return new StudySummary(metricName, baseline.Arm.Name, baseKeys.Length, arms);
    }

    /// <summary>Where an arm's passage scores are read from.</summary>
    public static string PassagesPath(PlannedArm arm) => Path.Combine(arm.ArmDir, "eval", PassageScore.FileName);

    /// <summary>Where an arm's units of <paramref name="metric"/> are read from: passages, or prompts for teacher NLL.</summary>
    public static string UnitsPath(PlannedArm arm, CorpusMetric metric) =>
        metric == CorpusMetric.MeanNll ? Path.Combine(arm.ArmDir, "eval", CompletionScore.FileName) : PassagesPath(arm);

    /// <summary>The metric in words: "held-out perplexity", "held-out bits per byte" or the teacher NLL of samples.</summary>
    public string MetricWords => Metric switch
    {
        "bits_per_byte" => "held-out bits per byte",
        "teacher_nll" => "the teacher's NLL of sampled completions of held-out prompts",
        _ => "held-out perplexity",
    };

    /// <summary>What the units resampled are, in words: "held-out passages" or "held-out prompts".</summary>
    public string UnitWords => Metric == "teacher_nll" ? "held-out prompts" : "held-out passages";

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
        var key = Metric is "bits_per_byte" or "teacher_nll" ? Metric : "perplexity";
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

    // An arm's units: NLL and count columns, and what identifies each unit (a passage's bytes, a prompt's window) so
    // that two arms are only compared on the same units.
    private sealed record Units(double[] Nll, double[] Counts, long[] Keys);

    private static Units Read(string path, CorpusMetric metric)
    {
        if (metric == CorpusMetric.MeanNll)
        {
            var c = CompletionScore.Read(path);
            return new Units([.. c.Select(s => s.Nll)], [.. c.Select(s => (double)s.Tokens)], [.. c.Select(s => (long)s.Prompt)]);
        }
        var p = PassageScore.Read(path);
        return new Units([.. p.Select(s => -s.LogLikelihood)], [.. p.Select(s => (double)(metric == CorpusMetric.BitsPerByte ? s.Bytes : s.Tokens))],
            [.. p.Select(s => (long)s.Bytes)]);
    }
}
