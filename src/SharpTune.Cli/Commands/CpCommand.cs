// `sharptune cp <config|recipe> <dest>`: copies a shipped config (comments and all) or a recipe's C# source so a
// user can edit it (torchtune's `tune cp`). Writes atomically; --no-clobber keeps an existing file.
using System.ComponentModel;
using Spectre.Console.Cli;
using SharpTune.Recipes;

namespace SharpTune.Cli.Commands;

/// <summary>Copies a config or a recipe source.</summary>
internal sealed class CpCommand(CliServices services) : Command<CpCommand.Settings>
{
    /// <summary>Arguments of <c>cp</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<config|recipe>")]
        [Description("A shipped config name (see `sharptune ls`) or a recipe name")]
        public string Source { get; init; } = "";

        [CommandArgument(1, "<dest>")]
        [Description("Destination file, or a folder (existing, or written with a trailing '/') to copy into under the source's name; a file name without an extension gets .yaml (config) or .cs (recipe)")]
        public string Destination { get; init; } = "";

        [CommandOption("-n|--no-clobber")]
        [Description("Do not overwrite an existing destination")]
        public bool NoClobber { get; init; }

        [CommandOption("--make-parents")]
        [Description("Create missing parent folders of the destination")]
        public bool MakeParents { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string text, fileName, extension;
        if (services.Configs.Find(settings.Source) is { } config)
        {
            text = File.ReadAllText(config.Path);
            fileName = Path.GetFileName(config.Path);
            extension = ".yaml";
        }
        else if (services.Recipes.TryGet(settings.Source, out var recipe))
        {
            text = RecipeRegistry.ReadSource(recipe)
                ?? throw new IOException($"the source of recipe '{recipe.Name}' is not embedded in this build");
            fileName = recipe.SourceFileName;
            extension = ".cs";
        }
        else
        {
            var names = services.Configs.All().Select(c => c.Name).Concat(services.Recipes.All.Select(r => r.Name));
            throw new ArgumentException($"'{settings.Source}' is neither a shipped config nor a recipe{SharpTune.Config.Names.Suggest(settings.Source, names)}; `sharptune ls` lists both");
        }

        // A trailing slash or an existing folder means "into this folder, under the source's name" (as cp(1)).
        var destination = settings.Destination;
        if (Directory.Exists(destination) || EndsInSeparator(destination)) destination = Path.Combine(destination, fileName);
        else if (Path.GetExtension(destination).Length == 0) destination += extension;
        var parent = Path.GetDirectoryName(Path.GetFullPath(destination))!;
        if (!Directory.Exists(parent))
        {
            if (!settings.MakeParents) throw new IOException($"cannot copy to '{destination}': folder '{parent}' does not exist (use --make-parents)");
            Directory.CreateDirectory(parent);
        }
        if (File.Exists(destination) && settings.NoClobber)
        {
            services.WriteOut($"{destination} already exists; not overwriting (--no-clobber)\n");
            return 0;
        }
        var tmp = destination + $".tmp{Environment.ProcessId}";
        File.WriteAllText(tmp, text);
        File.Move(tmp, destination, overwrite: true);
        services.WriteOut($"Copied {settings.Source} to {destination}\n");
        return 0;
    }

    private static bool EndsInSeparator(string path) =>
        path.EndsWith(Path.DirectorySeparatorChar) || path.EndsWith(Path.AltDirectorySeparatorChar);
}
