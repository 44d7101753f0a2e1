// `sharptune validate <config> [overrides]`: loads the config, applies overrides, resolves interpolation and
// checks every component and key, printing every problem with file:line (torchtune's `tune validate`, which stops
// at the first). The recipe whose declared keys are checked is the config's `# recipe:` line, or --recipe.
using System.ComponentModel;
using SharpTune.Recipes;
using SharpTune.Recipes.Study;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Validates a config.</summary>
internal sealed class ValidateCommand(CliServices services) : Command<ValidateCommand.Settings>
{
    /// <summary>Arguments of <c>validate</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<config>")]
        [Description("A shipped config name or a YAML file")]
        public string Config { get; init; } = "";

        [CommandArgument(1, "[overrides]")]
        [Description("key=value overrides: a.b=1, list=[[x,y]], key=null, ~key deletes, model=NAME swaps a component")]
        public string[] Overrides { get; init; } = [];

        [CommandOption("--recipe <NAME>")]
        [Description("Check the top-level keys this recipe declares (default: the config's '# recipe:' line)")]
        public string? Recipe { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var path = services.Configs.Resolve(settings.Config);
        if (StudySpec.IsStudyFile(path)) return ValidateStudy(path, settings);
        var recipeName = settings.Recipe ?? ConfigCatalog.ReadRecipeHeader(path);
        RecipeInfo? recipe = null;
        if (recipeName is not null)
        {
            if (services.Recipes.TryGet(recipeName, out var r)) recipe = r;
            else if (settings.Recipe is not null) recipe = services.Recipes.Get(recipeName); // throws with a suggestion
            else services.WriteErrLine($"warning: the config names recipe '{recipeName}', which is not registered; top-level keys are not checked");
        }
        var result = services.Recipes.Validate(recipe, path, settings.Overrides);
        if (result.IsValid)
        {
            services.WriteOut($"Config is well-formed{(recipe is null ? "" : $" for recipe '{recipe.Name}'")}: {settings.Config}\n");
            return 0;
        }
        foreach (var p in result.Problems) services.WriteErrLine(p.ToString());
        services.WriteErrLine($"error: {result.Problems.Count} problem{(result.Problems.Count == 1 ? "" : "s")} in {settings.Config}");
        return 1;
    }

    // A study file (`# study:` header): the study's own shape, its plan (references, cycles, baseline), and every
    // arm's training and eval config with the arm's overrides, as `ablate` would run them.
    private int ValidateStudy(string path, Settings settings)
    {
        var study = StudySpec.Load(path, settings.Overrides);
        var plan = StudyPlan.Create(study, services.Configs.Resolve);
        var problems = new StudyRunner(services.Recipes, new ConsoleReporter(services)).Validate(plan);
        if (problems.Count == 0)
        {
            services.WriteOut($"Study is well-formed: {settings.Config} ({plan.Arms.Count} arms, every training and eval config validates)\n");
            return 0;
        }
        foreach (var p in problems) services.WriteErrLine(p);
        services.WriteErrLine($"error: {problems.Count} problem{(problems.Count == 1 ? "" : "s")} in study {settings.Config}");
        return 1;
    }
}
