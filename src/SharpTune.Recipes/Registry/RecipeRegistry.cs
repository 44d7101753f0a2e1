// Finds recipes by their [Recipe] attribute, checks they follow the recipe contract, and runs one: validate the
// config against the recipe's declared keys and the component registry first (nothing runs, nothing is written
// when the config is invalid), then Setup -> Train -> Cleanup.
// Reference: torchtune/_recipe_registry.py, torchtune/_cli/run.py.
using System.Reflection;
using SharpTune.Config;
using SharpTune.Data;

namespace SharpTune.Recipes;

/// <summary>A registered recipe.</summary>
/// <param name="Name">Command-line name.</param>
/// <param name="Type">The sealed recipe class.</param>
/// <param name="Description">One line for <c>ls</c>.</param>
/// <param name="Keys">Declared top-level keys; null when the recipe declares none (any key accepted).</param>
public sealed record RecipeInfo(string Name, Type Type, string Description, IReadOnlyList<ConfigKeySpec>? Keys)
{
    /// <summary>The file name of the recipe's source (<c>TorchInfo.cs</c>), which <c>cp</c> can copy out.</summary>
    public string SourceFileName => Type.Name + ".cs";
}

/// <summary>The recipes available to the CLI.</summary>
public sealed class RecipeRegistry
{
    private readonly Dictionary<string, RecipeInfo> _recipes;

    private RecipeRegistry(Dictionary<string, RecipeInfo> recipes, ComponentRegistry components)
    {
        _recipes = recipes;
        Components = components;
    }

    /// <summary>The components recipes' configs may name.</summary>
    public ComponentRegistry Components { get; }

    /// <summary>Recipes sorted by name.</summary>
    public IReadOnlyList<RecipeInfo> All => [.. _recipes.Values.OrderBy(r => r.Name, StringComparer.Ordinal)];

    /// <summary>
    /// The built-in registry: recipes in this assembly; components in the library and this assembly, plus any
    /// <paramref name="extraAssemblies"/>.
    /// </summary>
    public static RecipeRegistry CreateDefault(params Assembly[] extraAssemblies)
    {
        Assembly[] assemblies = [typeof(SharpTuneConfig).Assembly, typeof(RecipeRegistry).Assembly, .. extraAssemblies];
        return Scan(assemblies);
    }

    /// <summary>Scans assemblies for recipes and components.</summary>
    /// <exception cref="InvalidOperationException">A recipe breaks the contract or two recipes share a name.</exception>
    public static RecipeRegistry Scan(IReadOnlyList<Assembly> assemblies)
    {
        var recipes = new Dictionary<string, RecipeInfo>(StringComparer.Ordinal);
        var errors = new List<string>();
        foreach (var type in assemblies.Distinct().SelectMany(a => a.GetTypes()))
        {
            foreach (var attr in type.GetCustomAttributes<RecipeAttribute>())
            {
                if (!type.IsSealed || !typeof(IRecipe).IsAssignableFrom(type) || FindConstructor(type) is null)
                    errors.Add($"recipe '{attr.Name}' ({type.FullName}) must be a sealed class implementing IRecipe with a public constructor (SharpTuneConfig, IRecipeReporter)");
                else if (recipes.TryGetValue(attr.Name, out var other))
                    errors.Add($"recipe name '{attr.Name}' is used by both {other.Type.FullName} and {type.FullName}");
                else
                {
                    try
                    {
                        var keys = DeclaredKeys(type);
                        recipes[attr.Name] = new RecipeInfo(attr.Name, type, attr.Description, keys.Count == 0 ? null : keys);
                    }
                    catch (InvalidOperationException e)
                    {
                        errors.Add($"recipe '{attr.Name}': {e.Message}");
                    }
                }
            }
        }
        if (errors.Count > 0) throw new InvalidOperationException(string.Join(Environment.NewLine, errors));
        return new RecipeRegistry(recipes, ComponentRegistry.Scan(assemblies));
    }

    /// <summary>
    /// The top-level keys <paramref name="recipeType"/> declares: [RecipeKey] on the class (the components it builds)
    /// and on the properties of its [RecipeOptions] record (its plain settings).
    /// </summary>
    /// <exception cref="InvalidOperationException">A key is declared twice.</exception>
    public static IReadOnlyList<ConfigKeySpec> DeclaredKeys(Type recipeType)
    {
        var keys = recipeType.GetCustomAttributes<RecipeKeyAttribute>().Select(k => k.ToSpec()).ToList();
        if (recipeType.GetCustomAttribute<RecipeOptionsAttribute>() is { } options)
            keys.AddRange(RecipeOptions.Keys(options.Type).Select(k => k.Key.ToSpec()));
        if (keys.GroupBy(k => k.Name).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new InvalidOperationException($"{recipeType.FullName} declares the key '{twice.Key}' twice (on the class and in its options record?)");
        return keys;
    }

    /// <summary>Finds a recipe by name.</summary>
    public bool TryGet(string name, out RecipeInfo recipe) => _recipes.TryGetValue(name, out recipe!);

    /// <summary>Finds a recipe by name or throws a one-line error with a suggestion.</summary>
    /// <exception cref="ArgumentException">No such recipe.</exception>
    public RecipeInfo Get(string name) => TryGet(name, out var r) ? r
        : throw new ArgumentException($"unknown recipe '{name}'{Names.Suggest(name, _recipes.Keys)}; `sharptune ls` lists the recipes");

    /// <summary>Loads <paramref name="configPath"/> with <paramref name="overrides"/> and validates it for <paramref name="recipe"/>.</summary>
    public ConfigValidation Validate(RecipeInfo? recipe, string configPath, IEnumerable<string> overrides)
    {
        var result = SharpTuneConfig.Validate(configPath, overrides, Components, recipe?.Keys);
        if (result.Config is null) return result;
        var problems = result.Problems.ToList();
        CheckDataFiles(result.Config.Root, "", problems);
        return result with { Problems = problems };
    }

    // A dataset's local data files must be of a type the readers take: refused here, before a run writes anything,
    // rather than at its first read. Paths that do not exist yet and hub ids are left to the run.
    private static void CheckDataFiles(ConfigNode node, string path, List<ConfigProblem> problems)
    {
        if (node.IsComponent && node.ComponentName?.StartsWith("sharptune.datasets.", StringComparison.Ordinal) == true)
        {
            foreach (var key in new[] { "source", "data_files" })
            {
                if (!node.TryGet(key, out var value) || value.Kind != ConfigNodeKind.Scalar || value.Text is not { Length: > 0 } file) continue;
                if (key == "source" && file is "json" or "csv" or "parquet" or "text") continue;
                try
                {
                    if (File.Exists(file)) DataSources.CheckFileType(file);
                    else if (Directory.Exists(file)) DataSources.ResolveFiles(file, split: null);
                    else if (Path.HasExtension(file) && (key == "data_files" || file.Contains('/') || file.Contains('\\')) &&
                             !DataSources.Extensions.Contains(Path.GetExtension(file).ToLowerInvariant()))
                        DataSources.CheckFileType(file);
                }
                catch (Exception e) when (e is NotSupportedException or FileNotFoundException)
                {
                    problems.Add(new ConfigProblem(value.Location, path.Length == 0 ? key : $"{path}.{key}", e.Message));
                }
            }
        }
        if (node.Kind == ConfigNodeKind.Map)
            foreach (var (k, v) in node.Entries) CheckDataFiles(v, path.Length == 0 ? k : $"{path}.{k}", problems);
        else if (node.Kind == ConfigNodeKind.List)
            for (var i = 0; i < node.Items.Count; i++) CheckDataFiles(node.Items[i], $"{path}[{i}]", problems);
    }

    /// <summary>
    /// Runs a recipe on a validated config: construct, Setup, Train, and always Cleanup.
    /// </summary>
    public static void Run(RecipeInfo recipe, SharpTuneConfig config, IRecipeReporter reporter, CancellationToken cancellationToken)
    {
        IRecipe instance;
        try { instance = (IRecipe)FindConstructor(recipe.Type)!.Invoke([config, reporter]); }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
            throw;
        }
        try
        {
            instance.Setup(cancellationToken);
            instance.Train(cancellationToken);
        }
        finally
        {
            instance.Cleanup();
        }
    }

    /// <summary>The recipe's C# source, embedded at build time, for <c>cp</c>; null when not embedded.</summary>
    public static string? ReadSource(RecipeInfo recipe)
    {
        using var stream = typeof(RecipeRegistry).Assembly.GetManifestResourceStream("recipes/" + recipe.SourceFileName);
        if (stream is null) return null;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    private static ConstructorInfo? FindConstructor(Type type) =>
        type.GetConstructor([typeof(SharpTuneConfig), typeof(IRecipeReporter)]);
}
