// `sharptune run <recipe> --config <name-or-path> [key=value ...]`: validates the config for the recipe first
// (every problem printed, nothing run, nothing written when invalid), then Setup -> Train -> Cleanup.
using System.ComponentModel;
using SharpTune.Recipes;
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
            foreach (var p in result.Problems) services.WriteErrLine(p.ToString());
            services.WriteErrLine($"error: {result.Problems.Count} config problem{(result.Problems.Count == 1 ? "" : "s")}; nothing was run");
            return 1;
        }
        var reporter = new ConsoleReporter(services);
        reporter.RunWithProgress(() => RecipeRegistry.Run(recipe, result.Config!, reporter, cancellationToken));
        return 0;
    }
}
