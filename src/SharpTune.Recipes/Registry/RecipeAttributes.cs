// Attributes that make a sealed class a runnable recipe and declare the top-level config keys it reads.
// A recipe is found by name (`sharptune run <name>`), built with (SharpTuneConfig, IRecipeReporter), then driven
// through Setup -> Train -> Cleanup (torchtune's recipe lifecycle: recipes/*.py `recipe_main`).
using SharpTune.Config;

namespace SharpTune.Recipes;

/// <summary>
/// Marks a sealed <see cref="IRecipe"/> class as the recipe <see cref="Name"/>. A class may carry several (the
/// single-device recipes are also registered under their <c>*_distributed</c> names: one code path, which is a
/// data-parallel job under mpirun and a plain one-process run otherwise).
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = false)]
public sealed class RecipeAttribute(string name) : Attribute
{
    /// <summary>The name used on the command line (<c>knowledge_distillation_single_device</c>).</summary>
    public string Name { get; } = name;

    /// <summary>One line shown by <c>sharptune ls</c>.</summary>
    public string Description { get; init; } = "";
}

/// <summary>
/// Declares a top-level config key the recipe reads: on the recipe class (a component the recipe builds, naming key
/// and type), or on a property of the recipe's options record (<see cref="RecipeOptionsAttribute"/>; key and type
/// are the property's). When a recipe declares at least one key, <c>validate</c> and <c>run</c> flag undeclared
/// top-level keys (with a suggestion), missing required keys and wrongly typed values.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Property, AllowMultiple = true, Inherited = false)]
public sealed class RecipeKeyAttribute : Attribute
{
    /// <summary>A key named on the recipe class.</summary>
    public RecipeKeyAttribute(string name, Type type)
    {
        Name = name;
        Type = type;
    }

    /// <summary>A key on an options property: its snake_case name and type are the property's.</summary>
    public RecipeKeyAttribute() { }

    /// <summary>The snake_case key (null on an options property until <see cref="For"/> fills it).</summary>
    public string? Name { get; private init; }

    /// <summary>The type the value binds to (for a component node: the type it must build; object: anything).</summary>
    public Type? Type { get; private init; }

    /// <summary>True when the key must be present and not null.</summary>
    public bool Required { get; init; }

    /// <summary>One line of documentation.</summary>
    public string? Description { get; init; }

    /// <summary>For a whole-number key: the smallest value accepted (<see cref="long.MinValue"/>: any).</summary>
    public long Minimum { get; init; } = long.MinValue;

    /// <summary>The key as the config validator sees it.</summary>
    public ConfigKeySpec ToSpec() => new(Name ?? throw new InvalidOperationException("an options property's key: use For(property)"),
        Type!, Required, Description, Minimum == long.MinValue ? null : Minimum);

    /// <summary>This attribute of <paramref name="property"/> with the property's key and type filled in.</summary>
    public RecipeKeyAttribute For(System.Reflection.PropertyInfo property) => new()
    {
        Name = Name ?? Names.ToSnakeCase(property.Name),
        Type = Type ?? property.PropertyType,
        Required = Required,
        Description = Description,
        Minimum = Minimum,
    };
}

/// <summary>The recipe lifecycle. Implementations are sealed classes with a constructor
/// <c>(SharpTuneConfig config, IRecipeReporter reporter)</c>.</summary>
public interface IRecipe
{
    /// <summary>Builds models, data, optimizers from the config.</summary>
    void Setup(CancellationToken cancellationToken);

    /// <summary>Runs the work (training, evaluation, measurement).</summary>
    void Train(CancellationToken cancellationToken);

    /// <summary>Releases what Setup acquired; called even when Setup or Train failed.</summary>
    void Cleanup();
}

/// <summary>How a recipe tells the user what it is doing; the CLI renders it (the library never prints).</summary>
public interface IRecipeReporter
{
    /// <summary>A line of information.</summary>
    void Info(string message);

    /// <summary>A warning the user should read (e.g. a slow dtype on this CPU).</summary>
    void Warning(string message);

    /// <summary>Metrics at a step (<c>loss</c>, <c>lr</c>, <c>tokens_per_second</c> ...).</summary>
    void Metrics(long step, IReadOnlyDictionary<string, double> values);

    /// <summary>Progress through a stage (<paramref name="total"/> 0 when unknown).</summary>
    void Progress(string stage, long completed, long total);

    /// <summary>
    /// A debugging detail (e.g. the allocator settings) that the user sees only on request (<c>--verbose</c>);
    /// dropped unless the reporter overrides this.
    /// </summary>
    void Verbose(string message) { }

    /// <summary>
    /// A piece of text shown as soon as it exists, without a line break (generated tokens as they come). Returns false
    /// when the reporter cannot stream; the caller then reports the whole text once with <see cref="Info"/>.
    /// </summary>
    bool Stream(string fragment) => false;
}
