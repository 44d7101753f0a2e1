// A recipe's own settings as one record, bound from the config's top level once: the record is the single source of
// their keys (snake_case property names), types (property types), defaults (property initialisers), documentation
// ([RecipeKey] on each property, which the config validator reads as it reads the class's component keys) and checks
// (Problems). A top-level key that neither the record nor the class declares is refused by the validator.
// torchtune reads cfg.<key> where it is used; one record per recipe keeps a recipe's keys readable in one place.
using System.Reflection;
using SharpTune.Config;

namespace SharpTune.Recipes;

/// <summary>Names the options record whose [RecipeKey] properties are the recipe's plain settings.</summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class RecipeOptionsAttribute(Type type) : Attribute
{
    /// <summary>The options record type.</summary>
    public Type Type { get; } = type;
}

/// <summary>A recipe's options record: what is wrong with a bound instance.</summary>
public interface IRecipeOptions
{
    /// <summary>Each problem as (key, message); empty when the settings are usable.</summary>
    IEnumerable<(string Key, string Message)> Problems();
}

/// <summary>Binds an options record from a config.</summary>
public static class RecipeOptions
{
    /// <summary>The [RecipeKey] properties of <paramref name="type"/>, each with its key and type.</summary>
    public static IReadOnlyList<(PropertyInfo Property, RecipeKeyAttribute Key)> Keys(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (Property: p, Attribute: p.GetCustomAttribute<RecipeKeyAttribute>()))
            .Where(x => x.Attribute is not null)
            .Select(x => (x.Property, x.Attribute!.For(x.Property)))
            .ToList();

    /// <summary>
    /// Sets every [RecipeKey] property of a new <typeparamref name="T"/> that the config sets (absent or null keys keep
    /// the record's default; a missing required key is an error), then refuses the first of its
    /// <see cref="IRecipeOptions.Problems"/> with the key's file and line.
    /// </summary>
    public static T Bind<T>(SharpTuneConfig config) where T : IRecipeOptions, new()
    {
        ArgumentNullException.ThrowIfNull(config);
        var options = new T();
        var get = typeof(SharpTuneConfig).GetMethod(nameof(SharpTuneConfig.Get), [typeof(string)])!;
        foreach (var (property, key) in Keys(typeof(T)))
        {
            if (!key.Required && !config.IsSet(key.Name!)) continue;
            try
            {
                property.SetValue(options, get.MakeGenericMethod(property.PropertyType).Invoke(config, [key.Name]));
            }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerException); // the binder's own ConfigException
            }
        }
        foreach (var (name, message) in options.Problems())
            throw new ConfigException(config.Find(name)?.Location ?? new SourceLocation(config.SourcePath ?? "<config>", 0, 0), name, message);
        return options;
    }
}
