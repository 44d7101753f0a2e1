// Maps `_component_` names to the public static factory methods that declare them with [Component(name)].
// Each area declares its components; the CLI or recipes choose which assemblies to scan, so Config depends on none.
// Reference: torchtune/config/_instantiate.py (which imports a dotted Python path instead).
using System.Reflection;

namespace SharpTune.Config;

/// <summary>Component names and their factory methods.</summary>
public sealed class ComponentRegistry
{
    private readonly Dictionary<string, MethodInfo> _factories;

    private ComponentRegistry(Dictionary<string, MethodInfo> factories) => _factories = factories;

    /// <summary>An empty registry (plain keys only).</summary>
    public static ComponentRegistry Empty { get; } = new(new Dictionary<string, MethodInfo>(StringComparer.Ordinal));

    /// <summary>Every registered component name, sorted.</summary>
    public IReadOnlyList<string> Names => [.. _factories.Keys.Order(StringComparer.Ordinal)];

    /// <summary>
    /// Scans <paramref name="assemblies"/> for <see cref="ComponentAttribute"/> on public static methods.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// The attribute sits on a method that is not public static or returns void, or two methods claim one name.
    /// </exception>
    public static ComponentRegistry Scan(IEnumerable<Assembly> assemblies)
    {
        var factories = new Dictionary<string, MethodInfo>(StringComparer.Ordinal);
        var errors = new List<string>();
        foreach (var assembly in assemblies.Distinct())
            foreach (var type in LoadableTypes(assembly))
                foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
                    foreach (var attribute in method.GetCustomAttributes<ComponentAttribute>())
                    {
                        var where = $"{type.FullName}.{method.Name}";
                        if (!method.IsStatic || !method.IsPublic || !(type.IsPublic || type.IsNestedPublic))
                            errors.Add($"[Component(\"{attribute.Name}\")] on {where}: components must be public static methods of public types");
                        else if (method.ReturnType == typeof(void) || method.ContainsGenericParameters)
                            errors.Add($"[Component(\"{attribute.Name}\")] on {where}: a component factory must return a value and not be generic");
                        else if (factories.TryGetValue(attribute.Name, out var other) && other != method)
                            errors.Add($"component name '{attribute.Name}' is declared twice: {other.DeclaringType?.FullName}.{other.Name} and {where}");
                        else factories[attribute.Name] = method;
                    }
        if (errors.Count > 0) throw new InvalidOperationException(string.Join(Environment.NewLine, errors));
        return new ComponentRegistry(factories);
    }

    /// <summary>Finds the factory for <paramref name="name"/>.</summary>
    public bool TryGet(string name, out MethodInfo factory) => _factories.TryGetValue(name, out factory!);

    private static IEnumerable<Type> LoadableTypes(Assembly assembly)
    {
        try { return assembly.GetTypes(); }
        catch (ReflectionTypeLoadException e) { return e.Types.Where(t => t is not null)!; }
    }
}
