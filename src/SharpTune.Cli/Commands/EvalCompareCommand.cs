// `sharptune eval [--compare] a/results.json [b/results.json ...]`: one saved report as the harness-style table, or
// several (one per checkpoint) side by side with deltas against a baseline run (the seed's ablation tables).
// Registered in Program.cs as `eval`; the reports are written by the `evaluate` recipe.
using System.ComponentModel;
using SharpTune.Eval;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary><c>sharptune eval [--compare] a/results.json b/results.json ... [--baseline N]</c>.</summary>
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

        /// <summary>Show a comparison even for a single report (several reports are always compared).</summary>
        [CommandOption("--compare")]
        [Description("put the reports side by side (implied by more than one report)")]
        public bool Compare { get; init; }

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
        if (reports.Length == 1 && !settings.Compare)
        {
            console.Write(EvalRendering.Report(reports[0]));
            console.WriteLine($"{reports[0].Model}: limit {(reports[0].Limit?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none")}, max_length {reports[0].MaxLength}, {reports[0].Date:u}");
            return 0;
        }
        console.Write(EvalRendering.Compare(CompareTable.Build(reports, settings.Baseline)));
        return 0;
    }
}
