// Console rendering of evaluation results: the harness-style table, a checkpoint comparison and perplexity figures.
// The `evaluate` recipe (load a checkpoint, then SharpTune.Eval.Evaluator.Run) renders its report with these.
// Table columns follow lm-evaluation-harness's make_table (lm_eval/utils.py).
using System.Globalization;
using SharpTune.Eval;
using Spectre.Console;

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

    /// <summary>Perplexity figures of one text.</summary>
    public static Table Perplexity(PerplexityResult r)
    {
        var table = new Table().Border(TableBorder.Markdown);
        table.AddColumn("Figure");
        table.AddColumn(new TableColumn("Value").RightAligned());
        void Row(string name, string value) => table.AddRow(name, value);
        Row("tokens", r.Tokens.ToString(CultureInfo.InvariantCulture));
        Row("loss per token (nats)", r.LossPerToken.ToString("F4", CultureInfo.InvariantCulture));
        Row("token perplexity", r.TokenPerplexity.ToString("F4", CultureInfo.InvariantCulture));
        Row("word perplexity", r.WordPerplexity.ToString("F4", CultureInfo.InvariantCulture));
        Row("byte perplexity", r.BytePerplexity.ToString("F4", CultureInfo.InvariantCulture));
        Row("bits per byte", r.BitsPerByte.ToString("F4", CultureInfo.InvariantCulture));
        return table;
    }
}
