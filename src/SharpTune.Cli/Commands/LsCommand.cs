// `sharptune ls`: a table of recipes and the shipped configs that run them (torchtune's `tune ls`).
using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Lists recipes and their configs.</summary>
internal sealed class LsCommand(CliServices services) : Command<LsCommand.Settings>
{
    /// <summary>Options of <c>ls</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--descriptions")]
        [Description("Also show each recipe's one-line description")]
        public bool Descriptions { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var configs = services.Configs.All();
        var table = new Table().Border(TableBorder.Simple).AddColumn("RECIPE").AddColumn("CONFIG");
        if (settings.Descriptions) table.AddColumn("DESCRIPTION");
        foreach (var recipe in services.Recipes.All)
        {
            var mine = configs.Where(c => c.Recipe == recipe.Name).Select(c => c.Name).ToList();
            if (mine.Count == 0) mine.Add("");
            for (var i = 0; i < mine.Count; i++)
            {
                var row = new List<string> { i == 0 ? recipe.Name : "", mine[i] };
                if (settings.Descriptions) row.Add(i == 0 ? recipe.Description : "");
                table.AddRow(row.Select(Markup.Escape).ToArray());
            }
        }
        foreach (var c in configs.Where(c => Recipes.Study.StudySpec.IsStudyFile(c.Path)))
        {
            var row = new List<string> { "(study: sharptune ablate)", c.Name };
            if (settings.Descriptions) row.Add("");
            table.AddRow(row.Select(Markup.Escape).ToArray());
        }
        var orphans = configs.Where(c => (c.Recipe is null || !services.Recipes.TryGet(c.Recipe, out _)) && !Recipes.Study.StudySpec.IsStudyFile(c.Path)).ToList();
        foreach (var c in orphans)
        {
            var row = new List<string> { c.Recipe is null ? "(no '# recipe:' line)" : $"{c.Recipe} (unknown recipe)", c.Name };
            if (settings.Descriptions) row.Add("");
            table.AddRow(row.Select(Markup.Escape).ToArray());
        }
        services.Out.Write(table);
        if (configs.Count == 0) services.WriteErrLine($"warning: no shipped configs found in {services.Configs.Directory}");
        return 0;
    }
}
