// `sharptune demo`: the embedded default study. Generates the synthetic instruction task (train and held-out
// splits, and the multiple-choice eval file) into the output folder, then runs the shipped studies/demo study:
// a teacher trained from scratch, a smaller student's baseline, plain fine-tuning and KD at two kd_ratio values,
// each evaluated through the evaluate recipe's log-likelihood path. Needs nothing but the repository.
using System.ComponentModel;
using SharpTune.Recipes.Study;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Runs the demo study.</summary>
internal sealed class DemoCommand(CliServices services) : Command<DemoCommand.Settings>
{
    /// <summary>The shipped study the demo runs.</summary>
    public const string StudyName = "studies/demo";

    /// <summary>Options of <c>demo</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("-o|--output-dir <DIR>")]
        [Description("Study folder (default runs/demo); rerunning with the same folder resumes")]
        public string OutputDir { get; init; } = Path.Combine("runs", "demo");

        [CommandOption("--dry-run")]
        [Description("Write the data, validate every arm and print the plan; run nothing")]
        public bool DryRun { get; init; }

        [CommandOption("-v|--verbose")]
        [Description("Also print the recipes' debugging details (allocator settings ...)")]
        public bool Verbose { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var dir = Path.GetFullPath(settings.OutputDir);
        var data = DemoTask.Write(Path.Combine(dir, "data"));
        services.WriteOut($"Synthetic task: {data.TrainCount} train / {data.TestCount} held-out records, {data.ChoiceCount} multiple-choice items in {Path.Combine(dir, "data")}\n");
        return AblateCommand.Run(services, services.Configs.Resolve(StudyName), [], dir, settings.DryRun, settings.Verbose, cancellationToken);
    }
}
