// The shipped configs: YAML files under configs/<family>/<name>.yaml, copied next to the program at build time.
// A config names its recipe in a header comment line `# recipe: <name>`; the lines before it say how to run it.
// A config argument is either such a name (`llama3_2/8B_to_1B_KD_lora_single_device`, with or without .yaml)
// or a path to a YAML file. Reference: torchtune/_recipe_registry.py (which lists configs per recipe in code).
namespace SharpTune.Recipes;

/// <summary>A shipped config.</summary>
/// <param name="Name">The name relative to the configs folder, without <c>.yaml</c> (<c>dev/torch_info</c>).</param>
/// <param name="Path">The file.</param>
/// <param name="Recipe">The recipe its <c># recipe:</c> header names, or null.</param>
public sealed record ConfigEntry(string Name, string Path, string? Recipe);

/// <summary>Finds shipped configs and resolves config arguments.</summary>
public sealed class ConfigCatalog
{
    /// <summary>Environment variable that points at another configs folder.</summary>
    public const string DirectoryVariable = "SHARPTUNE_CONFIGS_DIR";

    /// <summary>Uses <paramref name="directory"/> (which may not exist: then there are no shipped configs).</summary>
    public ConfigCatalog(string directory) => Directory = directory;

    /// <summary>The configs folder.</summary>
    public string Directory { get; }

    /// <summary><c>$SHARPTUNE_CONFIGS_DIR</c>, else the <c>configs</c> folder next to the program.</summary>
    public static ConfigCatalog CreateDefault()
    {
        var env = Environment.GetEnvironmentVariable(DirectoryVariable);
        return new ConfigCatalog(string.IsNullOrEmpty(env) ? System.IO.Path.Combine(AppContext.BaseDirectory, "configs") : env);
    }

    /// <summary>Every shipped config, sorted by name.</summary>
    public IReadOnlyList<ConfigEntry> All()
    {
        if (!System.IO.Directory.Exists(Directory)) return [];
        return [.. System.IO.Directory.EnumerateFiles(Directory, "*.yaml", SearchOption.AllDirectories)
            .Select(p => new ConfigEntry(NameOf(p), p, ReadRecipeHeader(p)))
            .OrderBy(c => c.Name, StringComparer.Ordinal)];
    }

    /// <summary>The shipped config called <paramref name="name"/>, or null.</summary>
    public ConfigEntry? Find(string name)
    {
        var n = name.EndsWith(".yaml", StringComparison.Ordinal) ? name[..^5] : name;
        return All().FirstOrDefault(c => c.Name == n);
    }

    /// <summary>
    /// The file for a config argument: an existing file path wins, then a shipped config name.
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither (with a suggestion of the closest shipped name).</exception>
    public string Resolve(string nameOrPath)
    {
        if (File.Exists(nameOrPath)) return System.IO.Path.GetFullPath(nameOrPath);
        if (Find(nameOrPath) is { } entry) return entry.Path;
        var suggestion = SharpTune.Config.Names.Suggest(nameOrPath, All().Select(c => c.Name));
        throw new FileNotFoundException($"no config file or shipped config named '{nameOrPath}'{suggestion}; `sharptune ls` lists the shipped configs");
    }

    /// <summary>Reads the <c># recipe: name</c> line from the leading comment block of a YAML file.</summary>
    public static string? ReadRecipeHeader(string path)
    {
        foreach (var line in File.ReadLines(path))
        {
            var t = line.Trim();
            if (t.Length == 0) continue;
            if (!t.StartsWith('#')) break;
            var body = t.TrimStart('#').Trim();
            if (body.StartsWith("recipe:", StringComparison.Ordinal)) return body["recipe:".Length..].Trim();
        }
        return null;
    }

    private string NameOf(string path) =>
        System.IO.Path.ChangeExtension(System.IO.Path.GetRelativePath(Directory, path), null).Replace('\\', '/');
}
