// `sharptune run <recipe> --config <name-or-path> [key=value ...]`: validates the config for the recipe first
// (every problem printed, nothing run, nothing written when invalid), then Setup -> Train -> Cleanup. Under mpirun the
// run is wrapped in DistributedContext.Run: one data-parallel job, aborted as a whole when any rank fails.
using System.ComponentModel;
using SharpTune.Distributed;
using SharpTune.Native;
using SharpTune.Recipes;
using SharpTune.Recipes.Support;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Runs a recipe.</summary>
internal sealed class RunCommand(CliServices services) : Command<RunCommand.Settings>
{
    /// <summary>Arguments of <c>run</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<recipe>")]
        [Description("Recipe name (see `sharptune ls`)")]
        public string Recipe { get; init; } = "";

        [CommandOption("-c|--config <CONFIG>")]
        [Description("A shipped config name or a YAML file")]
        public string? Config { get; init; }

        [CommandArgument(1, "[overrides]")]
        [Description("key=value overrides: a.b=1, list=[[x,y]], key=null, ~key deletes, model=NAME swaps a component")]
        public string[] Overrides { get; init; } = [];

        [CommandOption("-v|--verbose")]
        [Description("Also print debugging details (allocator settings ...)")]
        public bool Verbose { get; init; }

        public override Spectre.Console.ValidationResult Validate() =>
            string.IsNullOrEmpty(Config) ? Spectre.Console.ValidationResult.Error("run needs --config <name-or-path>") : Spectre.Console.ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var recipe = services.Recipes.Get(settings.Recipe);
        var path = services.Configs.Resolve(settings.Config!);
        var declared = ConfigCatalog.ReadRecipeHeader(path);
        if (declared is not null && declared != recipe.Name)
            services.WriteErrLine($"warning: {settings.Config} says it is for recipe '{declared}', running it with '{recipe.Name}'");
        var result = services.Recipes.Validate(recipe, path, settings.Overrides);
        if (!result.IsValid)
        {
            var lines = result.Problems.Select(p => p.ToString())
                .Append($"error: {result.Problems.Count} config problem{(result.Problems.Count == 1 ? "" : "s")}; nothing was run").ToList();
            if (Mpi.LauncherEnvironment() is { Rank: > 0 } env)
            {
                // Every rank validates; rank 0 reports, and its exit ends this rank during the wait unless rank 0's config was valid.
                Thread.Sleep(DistributedContext.ReportGrace);
                lines = lines.Select(l => $"rank {env.Rank} of {env.Size}: {l}").ToList();
            }
            foreach (var line in lines) services.WriteErrLine(line);
            return 1;
        }
        var reporter = new ConsoleReporter(services, settings.Verbose);
        if (TorchRuntime.WaitPolicySetup is { } openMp)
        {
            reporter.Verbose($"openmp: {openMp}");
            if (openMp is { SetBySharpTune: true, LibgompLoadedFirst: true })
                reporter.Warning($"libgomp was loaded before SharpTune could set {openMp.Policy}: idle OpenMP threads will spin (export OMP_WAIT_POLICY=PASSIVE to avoid it)");
        }
        if (Mpi.LauncherEnvironment() is null)
        {
            // Plain one-process run: errors propagate to the CLI's usual handling.
            reporter.RunWithProgress(() => RecipeRegistry.Run(recipe, result.Config!, reporter, cancellationToken));
            return 0;
        }
        // Under mpirun: every rank runs the recipe inside the job; a failing rank reports its error and MPI_Abort ends
        // the whole job (the others would otherwise wait in a collective for ever). Only rank 0 reports, and an error
        // every rank hits is printed once, as the one line a one-process run prints. First the ranks check that they
        // run the same config (ranks started with different arguments would wait in different collectives for ever).
        var options = new DistributedOptions { ThreadsPerRank = result.Config!.Get<int?>("threads", null) };
        return DistributedContext.Run(ctx =>
        {
            ConfigFingerprint.EnsureSameOnAllRanks(ctx, ConfigFingerprint.Of(result.Config!));
            if (ctx.IsMain) reporter.RunWithProgress(() => RecipeRegistry.Run(recipe, result.Config!, reporter, cancellationToken));
            else RecipeRegistry.Run(recipe, result.Config!, SilentReporter.Instance, cancellationToken);
            return 0;
        }, services.WriteErrLine, options, services.DescribeError);
    }

    // What ranks other than 0 report: nothing (rank 0 says the same; a failure is reported by DistributedContext.Run).
    private sealed class SilentReporter : IRecipeReporter
    {
        public static readonly SilentReporter Instance = new();
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) { }
        public void Progress(string stage, long completed, long total) { }
    }
}
