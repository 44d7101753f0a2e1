// `sharptune cat <config> [--sort]`: prints a shipped config (or a YAML file) as written, or with --sort its keys
// sorted at every level (comments dropped), as torchtune's `tune cat` does.
using System.ComponentModel;
using SharpTune.Config;
using Spectre.Console.Cli;

namespace SharpTune.Cli.Commands;

/// <summary>Prints a config.</summary>
internal sealed class CatCommand(CliServices services) : Command<CatCommand.Settings>
{
    /// <summary>Arguments of <c>cat</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<config>")]
        [Description("A shipped config name or a YAML file")]
        public string Config { get; init; } = "";

        [CommandOption("--sort")]
        [Description("Print keys sorted alphabetically (drops comments)")]
        public bool Sort { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (services.Configs.Find(settings.Config) is null && !File.Exists(settings.Config) && services.Recipes.TryGet(settings.Config, out _))
            throw new ArgumentException($"'{settings.Config}' is a recipe; `cat` prints configs (see `sharptune ls`)");
        var path = services.Configs.Resolve(settings.Config);
        if (!settings.Sort)
        {
            var text = File.ReadAllText(path);
            services.WriteOut(text.EndsWith('\n') ? text : text + "\n");
            return 0;
        }
        services.WriteOut(ConfigWriter.ToYaml(ConfigLoader.LoadFile(path), sortKeys: true));
        return 0;
    }
}
