// Console rendering of evaluation results (harness-style table, checkpoint comparison) and the `compare` command that
// puts saved results.json files side by side. The `evaluate` recipe itself (load a checkpoint, then
// SharpTune.Eval.Evaluator.Run) is wired by the recipe layer; it renders its report with EvalRendering.
// Table columns follow lm-evaluation-harness's make_table (lm_eval/utils.py).
using System.ComponentModel;
using System.Globalization;
using SharpTune.Eval;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Spectre tables for evaluation reports.</summary>
public static class EvalRendering
{
    /// <summary>| Tasks | n-shot | Metric | Value | ± | Stderr | N |, one row per task/metric.</summary>
    public static Table Report(EvalReport report)
    {
        var table = new Table().Border(TableBorder.Markdown);
        table.AddColumn("Tasks");
        table.AddColumn(new TableColumn("n-shot").RightAligned());
        table.AddColumn("Metric");
        table.AddColumn(new TableColumn("Value").RightAligned());
        table.AddColumn("");
        table.AddColumn(new TableColumn("Stderr").RightAligned());
        table.AddColumn(new TableColumn("N").RightAligned());
        string? last = null;
        foreach (var r in report.Results)
        {
            table.AddRow(
                Markup.Escape(r.Task == last ? "" : r.Task),
                report.NumFewshot.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(r.Metric),
                r.Value.ToString("F4", CultureInfo.InvariantCulture),
                "±",
                r.Stderr is { } s ? s.ToString("F4", CultureInfo.InvariantCulture) : "N/A",
                r.N.ToString(CultureInfo.InvariantCulture));
            last = r.Task;
        }
        return table;
    }

    /// <summary>Checkpoints side by side; non-baseline cells show the delta, green when up, red when down.</summary>
    public static Table Compare(CompareTable compare)
    {
        var table = new Table().Border(TableBorder.Markdown);
        table.AddColumn("Task");
        table.AddColumn("Metric");
        for (var i = 0; i < compare.Columns.Count; i++)
            table.AddColumn(new TableColumn(Markup.Escape(compare.Columns[i] + (i == compare.BaselineIndex ? " (baseline)" : ""))).RightAligned());
        foreach (var row in compare.Rows)
        {
            var cells = new List<string> { Markup.Escape(row.Task), Markup.Escape(row.Metric) };
            for (var i = 0; i < compare.Columns.Count; i++)
            {
                if (row.Values[i] is not { } v) { cells.Add("-"); continue; }
                var text = v.ToString("F4", CultureInfo.InvariantCulture);
                if (i != compare.BaselineIndex && row.Deltas[i] is { } d)
                {
                    var colour = d > 0 ? "green" : d < 0 ? "red" : "grey";
                    text += $" [{colour}]({d.ToString("+0.0000;-0.0000;+0.0000", CultureInfo.InvariantCulture)})[/]";
                }
                cells.Add(text);
            }
            table.AddRow(cells.ToArray());
        }
        return table;
    }
}

/// <summary><c>sharptune compare a/results.json b/results.json ... [--baseline N]</c>.</summary>
public sealed class EvalCompareCommand(IAnsiConsole console) : Command<EvalCompareCommand.Settings>
{
    /// <summary>Arguments of the compare command.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>results.json files written by evaluate, one per checkpoint.</summary>
        [CommandArgument(0, "<results>")]
        [Description("results.json files written by `evaluate`, one per checkpoint")]
        public string[] Results { get; init; } = [];

        /// <summary>Index (0-based) of the baseline column.</summary>
        [CommandOption("--baseline")]
        [Description("0-based index of the run the deltas are taken against")]
        [DefaultValue(0)]
        public int Baseline { get; init; }

        /// <inheritdoc />
        public override ValidationResult Validate()
        {
            if (Results.Length == 0) return ValidationResult.Error("give at least one results.json");
            if (Baseline < 0 || Baseline >= Results.Length)
                return ValidationResult.Error($"--baseline {Baseline} is not one of the {Results.Length} results (0..{Results.Length - 1})");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var reports = settings.Results.Select(path =>
        {
            var report = EvalReport.Load(path);
            return string.IsNullOrEmpty(report.Model) ? report with { Model = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path))) ?? path } : report;
        }).ToArray();
        console.Write(EvalRendering.Compare(CompareTable.Build(reports, settings.Baseline)));
        return 0;
    }
}
