// `sharptune demo`: the embedded default study. Needs nothing but the repository.
// The default task (shakespeare) copies the shipped assets (configs/demo/assets: Shakespeare's plays split into
// train.txt and heldout.txt, llama2.c's 512-piece tokenizer, a teacher trained on train.txt) into <output_dir>/data
// and runs studies/demo: one student, from one seeded init and in one data order, trained with plain cross-entropy
// (the baseline) and with distillation losses, each scored on held-out perplexity with paired bootstrap intervals.
// `--task synthetic` runs the earlier synthetic instruction study (studies/demo_synthetic) instead.
using System.ComponentModel;
using SharpTune.Recipes.Study;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Runs the demo study.</summary>
internal sealed class DemoCommand(CliServices services) : Command<DemoCommand.Settings>
{
    /// <summary>The shipped study the demo runs.</summary>
    public const string StudyName = "studies/demo";

    /// <summary>The shipped study of <c>--task synthetic</c>.</summary>
    public const string SyntheticStudyName = "studies/demo_synthetic";

    /// <summary>Options of <c>demo</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("-o|--output-dir <DIR>")]
        [Description("Study folder (default runs/demo, runs/demo_synthetic for --task synthetic); rerunning with the same folder resumes")]
        public string? OutputDir { get; init; }

        [CommandOption("--task <TASK>")]
        [Description("shakespeare (default: real text, held-out perplexity) or synthetic (the generated instruction task, multiple choice)")]
        public string Task { get; init; } = "shakespeare";

        [CommandOption("--steps <N>")]
        [Description("Optimizer steps of every student arm (default: the study's vars.steps, 300); fewer for a quick look")]
        public int? Steps { get; init; }

        [CommandOption("--dry-run")]
        [Description("Write the data, validate every arm and print the plan; run nothing")]
        public bool DryRun { get; init; }

        [CommandOption("-v|--verbose")]
        [Description("Also print the recipes' own lines (every logged step, data and model details)")]
        public bool Verbose { get; init; }

        public override Spectre.Console.ValidationResult Validate() =>
            Task is not ("shakespeare" or "synthetic") ? Spectre.Console.ValidationResult.Error($"--task: expected shakespeare or synthetic, got '{Task}'")
            : Steps is < 1 ? Spectre.Console.ValidationResult.Error($"--steps: expected at least 1, got {Steps}")
            : Steps is not null && Task == "synthetic" ? Spectre.Console.ValidationResult.Error("--steps applies to the shakespeare task only")
            : Spectre.Console.ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Task == "synthetic")
        {
            var syntheticDir = Path.GetFullPath(settings.OutputDir ?? Path.Combine("runs", "demo_synthetic"));
            var data = DemoTask.Write(Path.Combine(syntheticDir, "data"));
            services.WriteOut($"Synthetic task: {data.TrainCount} train / {data.TestCount} held-out records, {data.ChoiceCount} multiple-choice items in {Path.Combine(syntheticDir, "data")}\n");
            return AblateCommand.Run(services, services.Configs.Resolve(SyntheticStudyName), [], syntheticDir, settings.DryRun, settings.Verbose, cancellationToken);
        }
        var dir = Path.GetFullPath(settings.OutputDir ?? Path.Combine("runs", "demo"));
        var assets = Path.Combine(services.Configs.Directory, "demo", "assets");
        var copied = DemoAssets.Copy(assets, Path.Combine(dir, "data"));
        services.WriteOut($"Shakespeare: {new FileInfo(Path.Combine(dir, "data", "train.txt")).Length:N0} bytes to train on, " +
            $"{new FileInfo(Path.Combine(dir, "data", "heldout.txt")).Length:N0} held out; tokenizer and teacher in {Path.Combine(dir, "data")}" +
            (copied > 0 ? $" ({copied} files copied from {assets})" : "") + "\n");
        string[] overrides = settings.Steps is { } steps ? [$"vars.steps={steps}"] : [];
        return AblateCommand.Run(services, services.Configs.Resolve(StudyName), overrides, dir, settings.DryRun, settings.Verbose, cancellationToken);
    }
}
