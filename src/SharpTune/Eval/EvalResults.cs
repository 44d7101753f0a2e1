// Evaluation results: one record per (task, metric) with value, standard error and document count; a report that
// serialises to JSON (written atomically) and renders as a harness-style table; and a comparison of several
// checkpoints side by side with deltas against a baseline (the seed's ablation tables).
// Reference for the table's columns: lm_eval/utils.py (make_table: Tasks, Version, Filter, n-shot, Metric, Value, Stderr).
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace SharpTune.Eval;

/// <summary>One aggregated metric of one task.</summary>
/// <param name="Task">Harness task name.</param>
/// <param name="Metric">Metric name (acc, acc_norm, ...).</param>
/// <param name="Value">Mean over documents.</param>
/// <param name="Stderr">Standard error of the mean (null when fewer than two documents).</param>
/// <param name="N">Number of documents.</param>
public sealed record EvalResult(string Task, string Metric, double Value, double? Stderr, int N);

/// <summary>The results of one evaluation run.</summary>
public sealed record EvalReport
{
    /// <summary>A label for the evaluated model (checkpoint path or name).</summary>
    public string Model { get; init; } = "";

    /// <summary>The aggregated metrics, in task then metric order.</summary>
    public required IReadOnlyList<EvalResult> Results { get; init; }

    /// <summary>Document limit per task, if one was set.</summary>
    public int? Limit { get; init; }

    /// <summary>Number of shots (always 0 here).</summary>
    public int NumFewshot { get; init; }

    /// <summary>The max_length used for scoring.</summary>
    public int MaxLength { get; init; }

    /// <summary>When the run finished (UTC).</summary>
    public DateTimeOffset Date { get; init; } = DateTimeOffset.UtcNow;

    /// <summary>Wall-clock seconds spent scoring.</summary>
    public double Seconds { get; init; }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The report as indented JSON (snake_case keys).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Parses a report written by <see cref="ToJson"/>.</summary>
    public static EvalReport FromJson(string json, string source = "json")
    {
        try
        {
            return JsonSerializer.Deserialize<EvalReport>(json, JsonOptions)
                ?? throw new InvalidDataException($"{source}: empty evaluation report");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not an evaluation report: {e.Message}", e);
        }
    }

    /// <summary>Writes the JSON to <paramref name="path"/> atomically (temporary file, then rename).</summary>
    public void Save(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(tmp, ToJson(), new UTF8Encoding(false));
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Loads a saved report.</summary>
    public static EvalReport Load(string path) =>
        File.Exists(path) ? FromJson(File.ReadAllText(path), path) : throw new FileNotFoundException($"report not found: {path}", path);

    /// <summary>
    /// The report in lm-evaluation-harness's results.json shape, for tools that read the harness's output:
    /// <c>{"results": {"hellaswag": {"alias": "hellaswag", "acc,none": 0.45, "acc_stderr,none": 0.005}},
    /// "n-samples": {"hellaswag": {"effective": 10042}}, "n-shot": {...}, "config": {...}}</c> (stderr "N/A" when absent).
    /// </summary>
    public string ToHarnessJson()
    {
        var results = new JsonObject();
        var samples = new JsonObject();
        var shots = new JsonObject();
        foreach (var group in Results.GroupBy(r => r.Task))
        {
            var task = new JsonObject { ["alias"] = group.Key };
            foreach (var r in group)
            {
                task[$"{r.Metric},none"] = r.Value;
                task[$"{r.Metric}_stderr,none"] = r.Stderr is { } e ? JsonValue.Create(e) : JsonValue.Create("N/A");
            }
            results[group.Key] = task;
            samples[group.Key] = new JsonObject { ["effective"] = group.First().N };
            shots[group.Key] = NumFewshot;
        }
        var root = new JsonObject
        {
            ["results"] = results,
            ["n-shot"] = shots,
            ["n-samples"] = samples,
            ["config"] = new JsonObject { ["model"] = Model, ["limit"] = Limit, ["max_length"] = MaxLength },
            ["date"] = Date.ToUnixTimeMilliseconds() / 1000.0,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The value of <paramref name="task"/>/<paramref name="metric"/>, or null.</summary>
    public EvalResult? Find(string task, string metric) =>
        Results.FirstOrDefault(r => r.Task == task && r.Metric == metric);

    /// <summary>A harness-style Markdown table: | Tasks | n-shot | Metric | Value | ± | Stderr | N |.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("| Tasks | n-shot | Metric | Value |   | Stderr | N |");
        sb.AppendLine("|---|---:|---|---:|---|---:|---:|");
        string? last = null;
        foreach (var r in Results)
        {
            var task = r.Task == last ? "" : r.Task;
            last = r.Task;
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {task} | {NumFewshot} | {r.Metric} | {r.Value:F4} | ± | {(r.Stderr is { } s && !double.IsNaN(s) ? s.ToString("F4", CultureInfo.InvariantCulture) : "N/A")} | {r.N} |");
        }
        return sb.ToString();
    }
}

/// <summary>One row of a comparison: a task/metric across checkpoints.</summary>
/// <param name="Task">Task name.</param>
/// <param name="Metric">Metric name.</param>
/// <param name="Values">One value per checkpoint (null where that run lacks the metric).</param>
/// <param name="Stderrs">One standard error per checkpoint (null where absent).</param>
/// <param name="Deltas">Value minus the baseline's value per checkpoint (null where either is missing).</param>
public sealed record CompareRow(string Task, string Metric, IReadOnlyList<double?> Values, IReadOnlyList<double?> Stderrs,
    IReadOnlyList<double?> Deltas);

/// <summary>Several evaluation reports side by side, with deltas against a baseline.</summary>
/// <param name="Columns">Checkpoint labels, in column order.</param>
/// <param name="BaselineIndex">Which column the deltas are taken against.</param>
/// <param name="Rows">One row per task/metric present in any report, in first-seen order.</param>
public sealed record CompareTable(IReadOnlyList<string> Columns, int BaselineIndex, IReadOnlyList<CompareRow> Rows)
{
    /// <summary>Builds the table; <paramref name="baselineIndex"/> picks the reference report.</summary>
    public static CompareTable Build(IReadOnlyList<EvalReport> reports, int baselineIndex = 0)
    {
        ArgumentNullException.ThrowIfNull(reports);
        if (reports.Count == 0) throw new ArgumentException("nothing to compare", nameof(reports));
        if (baselineIndex < 0 || baselineIndex >= reports.Count)
            throw new ArgumentOutOfRangeException(nameof(baselineIndex), baselineIndex, $"must index one of the {reports.Count} reports");
        var keys = new List<(string Task, string Metric)>();
        foreach (var report in reports)
            foreach (var r in report.Results)
                if (!keys.Contains((r.Task, r.Metric))) keys.Add((r.Task, r.Metric));
        var rows = keys.Select(k =>
        {
            var found = reports.Select(rep => rep.Find(k.Task, k.Metric)).ToArray();
            var baseline = found[baselineIndex]?.Value;
            return new CompareRow(k.Task, k.Metric,
                found.Select(f => f?.Value).ToArray(),
                found.Select(f => f?.Stderr).ToArray(),
                found.Select(f => f is null || baseline is null ? (double?)null : f.Value - baseline.Value).ToArray());
        }).ToArray();
        var labels = reports.Select((r, i) => string.IsNullOrEmpty(r.Model) ? $"run {i + 1}" : r.Model).ToArray();
        return new CompareTable(labels, baselineIndex, rows);
    }

    /// <summary>A Markdown table: value (and delta vs baseline) per checkpoint.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.Append("| Task | Metric |");
        for (var i = 0; i < Columns.Count; i++) sb.Append(' ').Append(Columns[i]).Append(i == BaselineIndex ? " (baseline) |" : " |");
        sb.AppendLine();
        sb.Append("|---|---|").Append(string.Concat(Enumerable.Repeat("---:|", Columns.Count))).AppendLine();
        foreach (var row in Rows)
        {
            sb.Append(CultureInfo.InvariantCulture, $"| {row.Task} | {row.Metric} |");
            for (var i = 0; i < Columns.Count; i++)
            {
                var v = row.Values[i];
                sb.Append(' ').Append(v is null ? "-" : v.Value.ToString("F4", CultureInfo.InvariantCulture));
                if (i != BaselineIndex && row.Deltas[i] is { } d) sb.Append(CultureInfo.InvariantCulture, $" ({d:+0.0000;-0.0000;+0.0000})");
                sb.Append(" |");
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
