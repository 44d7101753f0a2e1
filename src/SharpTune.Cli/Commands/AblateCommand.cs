// `sharptune ablate --config <study.yaml> [overrides]`: runs an ablation study (see docs/ablation.md): every arm
// through the real recipes in dependency order, skipping arms finished earlier (done.json), then writes the report
// folder and prints the eval table. Overrides apply to the study file itself (`output_dir=runs/x`).
using System.ComponentModel;
using SharpTune.Recipes.Study;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Runs a study.</summary>
internal sealed class AblateCommand(CliServices services) : Command<AblateCommand.Settings>
{
    /// <summary>Arguments of <c>ablate</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("-c|--config <STUDY>")]
        [Description("A shipped study (studies/...) or a study YAML file")]
        public string? Config { get; init; }

        [CommandArgument(0, "[overrides]")]
        [Description("key=value overrides of the study file (output_dir=runs/mine, baseline=student_ft ...)")]
        public string[] Overrides { get; init; } = [];

        [CommandOption("--dry-run")]
        [Description("Validate every arm and print the plan (order, commands); run nothing")]
        public bool DryRun { get; init; }

        [CommandOption("-v|--verbose")]
        [Description("Also print the recipes' debugging details (allocator settings ...)")]
        public bool Verbose { get; init; }

        public override Spectre.Console.ValidationResult Validate() =>
            string.IsNullOrEmpty(Config) ? Spectre.Console.ValidationResult.Error("ablate needs --config <study.yaml>") : Spectre.Console.ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken) =>
        Run(services, services.Configs.Resolve(settings.Config!), settings.Overrides, null, settings.DryRun, settings.Verbose, cancellationToken);

    /// <summary>Plans, validates and runs a study file; shared with <c>demo</c>.</summary>
    internal static int Run(CliServices services, string studyPath, IEnumerable<string> overrides, string? studyDir, bool dryRun, bool verbose,
        CancellationToken cancellationToken)
    {
        var study = StudySpec.Load(studyPath, overrides);
        var plan = StudyPlan.Create(study, services.Configs.Resolve, studyDir);
        var reporter = new ConsoleReporter(services, verbose);
        var runner = new StudyRunner(services.Recipes, reporter, progressLines: !reporter.IsLive);
        if (dryRun)
        {
            var problems = runner.Validate(plan);
            PrintPlan(services, plan);
            foreach (var p in problems) services.WriteErrLine(p);
            if (problems.Count > 0) services.WriteErrLine($"error: {problems.Count} problem{(problems.Count == 1 ? "" : "s")}; nothing was run");
            return problems.Count == 0 ? 0 : 1;
        }
        StudyOutcome? outcome = null;
        reporter.RunWithProgress(() => outcome = runner.Run(plan, cancellationToken));
        var table = StudyReport.Table(plan);
        services.WriteOut("\n" + StudyTableText(table) + "\n");
        if (StudySummary.Build(plan) is { } summary) services.WriteOut($"{summary.Headline()}\n");
        services.WriteOut($"Report: {Path.Combine(outcome!.ReportDir, "report.html")} ({outcome.Ran.Count} arms run, {outcome.Skipped.Count} already done, {outcome.Seconds:F1} s)\n");
        return 0;
    }

    internal static void PrintPlan(CliServices services, StudyPlan plan)
    {
        services.WriteOut($"Study '{plan.Study.Name}' in {plan.StudyDir}: {plan.Arms.Count} arms, baseline {plan.Baseline ?? "(none)"}\n");
        for (var i = 0; i < plan.Arms.Count; i++)
        {
            var arm = plan.Arms[i];
            var done = ArmMarker.TryRead(arm.ArmDir) is not null ? " (done)" : "";
            services.WriteOut($"{i + 1}. {arm.Name}{done}{(arm.DependsOn.Count > 0 ? $" after {string.Join(", ", arm.DependsOn)}" : "")}\n");
            if (plan.RunCommand(arm) is { } c) services.WriteOut($"   {c}\n");
            if (plan.EvalRunCommand(arm) is { } e) services.WriteOut($"   {e}\n");
        }
    }

    /// <summary>The eval table as aligned plain text (arms as rows, value and delta per metric).</summary>
    internal static string StudyTableText(ReportTable table)
    {
        if (table.Rows.Count == 0) return "(no arm was evaluated)";
        var header = new[] { "arm" }.Concat(table.Columns.Select(c => $"{c.Task} {c.Metric}")).ToArray();
        var rows = table.Rows.Select(r => new[] { r.Arm + (r.Arm == table.Baseline ? " (baseline)" : "") }
            .Concat(r.Values.Select((v, i) => StudyReport.Cell(v, r.Deltas[i]))).ToArray()).ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Max(r => r[i].Length))).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i])));
        return string.Join("\n", new[] { Line(header), string.Join("  ", widths.Select(w => new string('-', w))) }.Concat(rows.Select(Line)));
    }
}
