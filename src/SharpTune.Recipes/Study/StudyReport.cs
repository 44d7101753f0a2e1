// The study report folder: report.md and report.html with the eval table (one row per arm, each metric with its
// delta against the baseline arm), the overlaid class-loss, KD-loss and held-out-loss curves (PNG), a table of each
// arm's last training loss next to its last and best held-out loss and perplexity, and per arm the exact
// command lines and the resolved configs they ran with. Built only from what finished arms left on disk
// (done.json, eval/results.json, metrics.jsonl, resolved configs), so it can be rebuilt at any time.
using System.Globalization;
using System.Net;
using System.Text;
using SharpTune.Checkpointing;
using SharpTune.Eval;

namespace SharpTune.Recipes.Study;

/// <summary>One evaluated arm's numbers in the report table.</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="Values">Value per (task, metric) column; null where absent.</param>
/// <param name="Deltas">Value minus the baseline's; null for the baseline itself or where either is absent.</param>
public sealed record ReportRow(string Arm, IReadOnlyList<double?> Values, IReadOnlyList<double?> Deltas);

/// <summary>The eval table of a study.</summary>
/// <param name="Columns">(task, metric) columns.</param>
/// <param name="Baseline">The baseline arm.</param>
/// <param name="Rows">One row per evaluated, finished arm, in plan order.</param>
public sealed record ReportTable(IReadOnlyList<(string Task, string Metric)> Columns, string? Baseline, IReadOnlyList<ReportRow> Rows);

/// <summary>An arm's training and held-out losses from its metric log (null where not logged).</summary>
/// <param name="Arm">Arm name.</param>
/// <param name="TrainLoss">The last logged training loss.</param>
/// <param name="LastHeldOut">The last held-out loss (val_loss) and its step.</param>
/// <param name="BestHeldOut">The lowest held-out loss and its step.</param>
public sealed record LossRow(string Arm, double? TrainLoss, (double Loss, long Step)? LastHeldOut, (double Loss, long Step)? BestHeldOut)
{
    /// <summary>Reads <paramref name="jsonlLog"/>.</summary>
    public static LossRow From(string arm, string jsonlLog)
    {
        var rows = Training.JsonlMetricLogger.Read(jsonlLog);
        var train = rows.LastOrDefault(r => r.TryGetValue("loss", out var v) && double.IsFinite(v));
        var held = rows.Where(r => r.TryGetValue("val_loss", out var v) && double.IsFinite(v) && r.ContainsKey("step"))
            .Select(r => (Loss: r["val_loss"], Step: (long)r["step"])).ToList();
        return new LossRow(arm, train?["loss"], held.Count == 0 ? null : held[^1], held.Count == 0 ? null : held.MinBy(h => h.Loss));
    }

    /// <summary>"2.3100 (ppl 10.07) at step 40", or "-".</summary>
    public static string Cell((double Loss, long Step)? value) => value is { } v
        ? string.Create(CultureInfo.InvariantCulture, $"{v.Loss:F4} (ppl {Math.Exp(v.Loss):F3}) at step {v.Step}") : "-";
}

/// <summary>Writes a study's report folder.</summary>
public static class StudyReport
{
    /// <summary>Where an arm's evaluation results are read from (the eval recipe's output_dir/results.json).</summary>
    public static string ResultsPath(PlannedArm arm) => Path.Combine(arm.ArmDir, "eval", "results.json");

    /// <summary>The arm's training metric log (the first metrics.jsonl under its folder, outside eval/), or null.</summary>
    public static string? MetricsLog(PlannedArm arm)
    {
        if (!Directory.Exists(arm.ArmDir)) return null;
        var eval = Path.Combine(arm.ArmDir, "eval") + Path.DirectorySeparatorChar;
        return Directory.EnumerateFiles(arm.ArmDir, "metrics.jsonl", SearchOption.AllDirectories)
            .Where(p => !p.StartsWith(eval, StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
    }

    /// <summary>The eval table from the finished arms' results (baseline first in its own row).</summary>
    public static ReportTable Table(StudyPlan plan)
    {
        var reports = new List<(string Arm, EvalReport Report)>();
        foreach (var arm in plan.Arms.Where(a => a.Evaluate && ArmMarker.TryRead(a.ArmDir) is not null))
            if (File.Exists(ResultsPath(arm))) reports.Add((arm.Name, EvalReport.Load(ResultsPath(arm))));
        if (reports.Count == 0) return new ReportTable([], plan.Baseline, []);
        var baselineIndex = reports.FindIndex(r => r.Arm == plan.Baseline);
        var compare = CompareTable.Build([.. reports.Select(r => r.Report)], Math.Max(baselineIndex, 0));
        var columns = compare.Rows.Select(r => (r.Task, r.Metric)).ToList();
        var rows = reports.Select((r, i) => new ReportRow(r.Arm,
            compare.Rows.Select(c => c.Values[i]).ToArray(),
            compare.Rows.Select(c => baselineIndex < 0 || i == baselineIndex ? null : c.Deltas[i]).ToArray())).ToList();
        return new ReportTable(columns, baselineIndex < 0 ? null : plan.Baseline, rows);
    }

    /// <summary>Writes report.md, report.html and the loss PNGs into &lt;study&gt;/report; returns that folder.</summary>
    public static string Write(StudyPlan plan)
    {
        var dir = Path.Combine(plan.StudyDir, "report");
        Directory.CreateDirectory(dir);
        var table = Table(plan);
        var logs = plan.Arms.Where(a => ArmMarker.TryRead(a.ArmDir) is not null)
            .Select(a => (a.Name, Log: MetricsLog(a))).Where(x => x.Log is not null).Select(x => (x.Name, x.Log!)).ToList();
        var plots = new List<(string File, string Title)>();
        if (StudyPlots.Overlay(logs, "class_loss", "loss", "Class loss (cross-entropy) per arm", Path.Combine(dir, "class_loss.png")).Count > 0)
            plots.Add(("class_loss.png", "Class loss (cross-entropy); arms without a KD term show their loss"));
        if (StudyPlots.Overlay(logs, "kd_loss", null, "KD loss per arm", Path.Combine(dir, "kd_loss.png")).Count > 0)
            plots.Add(("kd_loss.png", "KD loss (distillation arms)"));
        if (StudyPlots.Overlay(logs, "val_loss", null, "Held-out loss per arm", Path.Combine(dir, "val_loss.png"), smoothing: 0).Count > 0)
            plots.Add(("val_loss.png", "Held-out loss (cross-entropy on the validation split, run_val_every_n_steps)"));
        var losses = logs.Select(l => LossRow.From(l.Item1, l.Item2)).ToList();
        var summary = StudySummary.Build(plan);
        if (summary is not null) AtomicFile.WriteAllText(Path.Combine(dir, StudySummary.FileName), summary.ToJson());
        AtomicFile.WriteAllText(Path.Combine(dir, "report.md"), Markdown(plan, table, plots, losses, summary));
        AtomicFile.WriteAllText(Path.Combine(dir, "report.html"), Html(plan, table, plots, losses, summary));
        return dir;
    }

    /// <summary>A value with its delta, as the tables show it: <c>0.4120 (+0.0310)</c>.</summary>
    public static string Cell(double? value, double? delta) =>
        value is null ? "-" : value.Value.ToString("F4", CultureInfo.InvariantCulture)
            + (delta is { } d ? string.Create(CultureInfo.InvariantCulture, $" ({d:+0.0000;-0.0000;+0.0000})") : "");

    private static string Markdown(StudyPlan plan, ReportTable table, List<(string File, string Title)> plots, List<LossRow> losses, StudySummary? summary)
    {
        var sb = new StringBuilder();
        if (summary is not null) sb.AppendLine(CultureInfo.InvariantCulture, $"**{summary.Headline()}**").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Study `{plan.Study.Name}`").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Study file: `{plan.Study.SourcePath}`; folder: `{plan.StudyDir}`.").AppendLine();
        if (summary is not null)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"## {Capitalize(summary.MetricWords)}").AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"Scored on {summary.Passages} {summary.UnitWords}. Intervals: 95% percentile bootstrap over them " +
                $"({Bootstrap.DefaultReplicates} replicates); the change against `{summary.Baseline}` is paired (the same resampled units for both arms). " +
                $"The same figures are in `{StudySummary.FileName}`.").AppendLine();
            sb.AppendLine("| Arm | what it is | value [95% CI] | change vs baseline [95% CI] |").AppendLine("|---|---|---:|---:|");
            foreach (var a in summary.Arms)
                sb.AppendLine(CultureInfo.InvariantCulture, $"| {a.Arm}{(a.Arm == summary.Baseline ? " (baseline)" : "")} | {a.Label} | {StudySummary.Cell(a.Value, false)} | {(a.Relative is { } r ? StudySummary.Cell(r, true) : "-")} |");
            sb.AppendLine();
            if (summary.Arms.Any(a => a.Sample is not null))
            {
                sb.AppendLine("### Samples (greedy, same held-out prompt)").AppendLine();
                foreach (var a in summary.Arms.Where(a => a.Sample is not null))
                    sb.AppendLine(CultureInfo.InvariantCulture, $"**{a.Arm}**").AppendLine().AppendLine("```text").AppendLine(a.Sample!.TrimEnd()).AppendLine("```").AppendLine();
            }
        }
        sb.AppendLine("## Evaluation").AppendLine();
        if (table.Rows.Count == 0) sb.AppendLine("No arm has been evaluated yet.").AppendLine();
        else
        {
            sb.AppendLine(table.Baseline is null ? "Baseline: none evaluated (no deltas)." : $"Deltas are against the baseline arm `{table.Baseline}`.").AppendLine();
            sb.Append("| Arm |").AppendJoin("", table.Columns.Select(c => $" {c.Task} {c.Metric} |")).AppendLine();
            sb.Append("|---|").Append(string.Concat(Enumerable.Repeat("---:|", table.Columns.Count))).AppendLine();
            foreach (var row in table.Rows)
            {
                sb.Append(CultureInfo.InvariantCulture, $"| {row.Arm}{(row.Arm == table.Baseline ? " (baseline)" : "")} |");
                for (var i = 0; i < table.Columns.Count; i++) sb.Append(' ').Append(Cell(row.Values[i], row.Deltas[i])).Append(" |");
                sb.AppendLine();
            }
            sb.AppendLine();
        }
        sb.AppendLine("## Loss curves").AppendLine();
        if (plots.Count == 0) sb.AppendLine("No arm logged training metrics.").AppendLine();
        if (losses.Count > 0)
        {
            sb.AppendLine("| Arm | last training loss | last held-out loss | best held-out loss |").AppendLine("|---|---:|---:|---:|");
            foreach (var l in losses)
                sb.AppendLine(CultureInfo.InvariantCulture, $"| {l.Arm} | {(l.TrainLoss is { } t ? t.ToString("F4", CultureInfo.InvariantCulture) : "-")} | {LossRow.Cell(l.LastHeldOut)} | {LossRow.Cell(l.BestHeldOut)} |");
            sb.AppendLine();
        }
        foreach (var (file, title) in plots) sb.AppendLine(CultureInfo.InvariantCulture, $"![{title}]({file})").AppendLine();
        sb.AppendLine("## Arms").AppendLine();
        foreach (var arm in plan.Arms)
        {
            var marker = ArmMarker.TryRead(arm.ArmDir);
            sb.AppendLine(CultureInfo.InvariantCulture, $"### {arm.Name}").AppendLine();
            sb.AppendLine(marker is null ? "Status: not finished." : string.Create(CultureInfo.InvariantCulture,
                $"Status: finished {marker.FinishedUtc:u} (train {marker.TrainSeconds:F1} s, eval {marker.EvalSeconds:F1} s).")).AppendLine();
            if (arm.DependsOn.Count > 0) sb.AppendLine(CultureInfo.InvariantCulture, $"Uses: {string.Join(", ", arm.DependsOn)}.").AppendLine();
            if (plan.RunCommand(arm) is { } cmd) sb.AppendLine("```bash").AppendLine(cmd).AppendLine("```");
            else sb.AppendLine(CultureInfo.InvariantCulture, $"Not trained: evaluates `{arm.Checkpoint}`.").AppendLine();
            if (plan.EvalRunCommand(arm) is { } ecmd) sb.AppendLine("```bash").AppendLine(ecmd).AppendLine("```");
            foreach (var (file, label) in ResolvedConfigs(arm))
                sb.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"<details><summary>{label}</summary>").AppendLine()
                    .AppendLine("```yaml").Append(File.ReadAllText(file).TrimEnd()).AppendLine().AppendLine("```").AppendLine().AppendLine("</details>");
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static string Html(StudyPlan plan, ReportTable table, List<(string File, string Title)> plots, List<LossRow> losses, StudySummary? summary)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.AppendLine("<!DOCTYPE html><html><head><meta charset=\"utf-8\">")
            .AppendLine(CultureInfo.InvariantCulture, $"<title>Study {E(plan.Study.Name)}</title>")
            .AppendLine("<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}.up{color:#080}.down{color:#b00}pre{background:#f6f6f6;padding:8px;overflow-x:auto}img{max-width:100%}</style>")
            .AppendLine("</head><body>");
        if (summary is not null) sb.AppendLine(CultureInfo.InvariantCulture, $"<p><strong>{E(summary.Headline())}</strong></p>");
        sb.AppendLine(CultureInfo.InvariantCulture, $"<h1>Study {E(plan.Study.Name)}</h1><p>Study file <code>{E(plan.Study.SourcePath)}</code>; folder <code>{E(plan.StudyDir)}</code>.</p>");
        if (summary is not null)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"<h2>{E(Capitalize(summary.MetricWords))}</h2><p>Scored on {summary.Passages} {E(summary.UnitWords)}. Intervals: 95% percentile bootstrap over them ({Bootstrap.DefaultReplicates} replicates); the change against <code>{E(summary.Baseline)}</code> is paired (the same resampled units for both arms). The same figures are in <code>{StudySummary.FileName}</code>.</p>");
            sb.AppendLine("<table><tr><th>Arm</th><th>what it is</th><th>value [95% CI]</th><th>change vs baseline [95% CI]</th></tr>");
            foreach (var a in summary.Arms)
            {
                var cls = a.Relative is { High: < 0 } ? " class=\"up\"" : a.Relative is { Low: > 0 } ? " class=\"down\"" : "";
                sb.AppendLine(CultureInfo.InvariantCulture, $"<tr><td>{E(a.Arm)}{(a.Arm == summary.Baseline ? " (baseline)" : "")}</td><td>{E(a.Label)}</td><td>{E(StudySummary.Cell(a.Value, false))}</td><td{cls}>{(a.Relative is { } r ? E(StudySummary.Cell(r, true)) : "-")}</td></tr>");
            }
            sb.AppendLine("</table>");
            if (summary.Arms.Any(a => a.Sample is not null))
            {
                sb.AppendLine("<h3>Samples (greedy, same held-out prompt)</h3>");
                foreach (var a in summary.Arms.Where(a => a.Sample is not null))
                    sb.AppendLine(CultureInfo.InvariantCulture, $"<p><b>{E(a.Arm)}</b></p><pre>{E(a.Sample!.TrimEnd())}</pre>");
            }
        }
        sb.AppendLine("<h2>Evaluation</h2>");
        if (table.Rows.Count == 0) sb.AppendLine("<p>No arm has been evaluated yet.</p>");
        else
        {
            sb.AppendLine(table.Baseline is null ? "<p>Baseline: none evaluated (no deltas).</p>" : $"<p>Deltas are against the baseline arm <code>{E(table.Baseline)}</code>.</p>");
            sb.Append("<table><tr><th>Arm</th>").AppendJoin("", table.Columns.Select(c => $"<th>{E(c.Task)} {E(c.Metric)}</th>")).AppendLine("</tr>");
            foreach (var row in table.Rows)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(row.Arm)}{(row.Arm == table.Baseline ? " (baseline)" : "")}</td>");
                for (var i = 0; i < table.Columns.Count; i++)
                {
                    var cls = row.Deltas[i] is > 0 ? " class=\"up\"" : row.Deltas[i] is < 0 ? " class=\"down\"" : "";
                    sb.Append(CultureInfo.InvariantCulture, $"<td{cls}>{E(Cell(row.Values[i], row.Deltas[i]))}</td>");
                }
                sb.AppendLine("</tr>");
            }
            sb.AppendLine("</table>");
        }
        sb.AppendLine("<h2>Loss curves</h2>");
        if (plots.Count == 0) sb.AppendLine("<p>No arm logged training metrics.</p>");
        if (losses.Count > 0)
        {
            sb.AppendLine("<table><tr><th>Arm</th><th>last training loss</th><th>last held-out loss</th><th>best held-out loss</th></tr>");
            foreach (var l in losses)
                sb.AppendLine(CultureInfo.InvariantCulture, $"<tr><td>{E(l.Arm)}</td><td>{(l.TrainLoss is { } t ? t.ToString("F4", CultureInfo.InvariantCulture) : "-")}</td><td>{E(LossRow.Cell(l.LastHeldOut))}</td><td>{E(LossRow.Cell(l.BestHeldOut))}</td></tr>");
            sb.AppendLine("</table>");
        }
        foreach (var (file, title) in plots) sb.AppendLine(CultureInfo.InvariantCulture, $"<figure><img src=\"{E(file)}\" alt=\"{E(title)}\"><figcaption>{E(title)}</figcaption></figure>");
        sb.AppendLine("<h2>Arms</h2>");
        foreach (var arm in plan.Arms)
        {
            var marker = ArmMarker.TryRead(arm.ArmDir);
            sb.AppendLine(CultureInfo.InvariantCulture, $"<h3>{E(arm.Name)}</h3>");
            sb.AppendLine(marker is null ? "<p>Status: not finished.</p>" : string.Create(CultureInfo.InvariantCulture,
                $"<p>Status: finished {marker.FinishedUtc:u} (train {marker.TrainSeconds:F1} s, eval {marker.EvalSeconds:F1} s).</p>"));
            if (plan.RunCommand(arm) is { } cmd) sb.AppendLine(CultureInfo.InvariantCulture, $"<pre>{E(cmd)}</pre>");
            else sb.AppendLine(CultureInfo.InvariantCulture, $"<p>Not trained: evaluates <code>{E(arm.Checkpoint ?? "")}</code>.</p>");
            if (plan.EvalRunCommand(arm) is { } ecmd) sb.AppendLine(CultureInfo.InvariantCulture, $"<pre>{E(ecmd)}</pre>");
            foreach (var (file, label) in ResolvedConfigs(arm))
                sb.AppendLine(CultureInfo.InvariantCulture, $"<details><summary>{E(label)}</summary><pre>{E(File.ReadAllText(file))}</pre></details>");
        }
        sb.AppendLine("</body></html>");
        return sb.ToString();
    }

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];

    private static IEnumerable<(string File, string Label)> ResolvedConfigs(PlannedArm arm)
    {
        var train = Path.Combine(arm.ArmDir, "resolved_config.yaml");
        var eval = Path.Combine(arm.ArmDir, "eval_resolved_config.yaml");
        if (File.Exists(train)) yield return (train, "resolved training config");
        if (File.Exists(eval)) yield return (eval, "resolved eval config");
    }
}
