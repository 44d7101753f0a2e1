// `validate`: finds every problem in a resolved config at once, without building anything: unknown components
// (with a suggestion), unknown keys (with a suggestion), missing required keys, values of the wrong type, and,
// when the recipe declares its keys, unknown or missing top-level keys. Interpolation and override problems are
// collected earlier by SharpTuneConfig.Validate and reported together with these.
// Reference: torchtune/config/_validate.py (which stops at the first component that fails to bind).
namespace SharpTune.Config;

/// <summary>Checks a resolved config tree against the component registry and a recipe's declared keys.</summary>
public static class ConfigValidator
{
    /// <summary>Returns every problem found (empty when the config is valid).</summary>
    /// <param name="root">The resolved config (overrides applied, interpolation resolved).</param>
    /// <param name="registry">Known components.</param>
    /// <param name="topLevelKeys">The recipe's declared keys; null to accept any top-level key.</param>
    /// <param name="file">The config file, named in problems about missing keys.</param>
    public static List<ConfigProblem> Validate(ConfigNode root, ComponentRegistry registry, IReadOnlyList<ConfigKeySpec>? topLevelKeys, string? file = null)
    {
        var problems = new List<ConfigProblem>();
        var binder = new ConfigBinder(registry);
        if (topLevelKeys is null)
        {
            Walk(root, "", binder, problems);
            return problems;
        }
        var specs = topLevelKeys.ToDictionary(k => k.Name, StringComparer.Ordinal);
        foreach (var (key, value) in root.Entries)
        {
            if (!specs.TryGetValue(key, out var spec))
            {
                problems.Add(new ConfigProblem(value.Location, key, $"unknown key '{key}' for this recipe{Names.Suggest(key, specs.Keys)}"));
                Walk(value, key, binder, problems);
                continue;
            }
            if (value.Kind == ConfigNodeKind.Null)
            {
                if (spec.Required) problems.Add(new ConfigProblem(value.Location, key, $"required key '{key}' ({ConfigBinder.TypeName(spec.Type)}) is null"));
                continue;
            }
            if (spec.Type == typeof(object)) Walk(value, key, binder, problems);
            else
            {
                var before = problems.Count;
                binder.Check(value, spec.Type, key, problems);
                if (problems.Count == before) CheckValue(value, spec, problems);
            }
        }
        var fileLocation = new SourceLocation(file ?? root.Location.Source, 0, 0);
        foreach (var spec in topLevelKeys)
            if (spec.Required && !root.ContainsKey(spec.Name))
                problems.Add(new ConfigProblem(fileLocation, spec.Name, $"missing required key '{spec.Name}' ({ConfigBinder.TypeName(spec.Type)})" +
                    (spec.Description is null ? "" : $": {spec.Description}")));
        return problems;
    }

    // What a type cannot say: a required string that is empty, a whole number below the key's minimum.
    private static void CheckValue(ConfigNode value, ConfigKeySpec spec, List<ConfigProblem> problems)
    {
        if (value.Kind != ConfigNodeKind.Scalar) return;
        if (spec.Required && spec.Type == typeof(string) && string.IsNullOrWhiteSpace(value.Text))
            problems.Add(new ConfigProblem(value.Location, spec.Name, $"required key '{spec.Name}' (string) is empty"));
        if (spec.Minimum is { } min && long.TryParse(value.Text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var v) && v < min)
            problems.Add(new ConfigProblem(value.Location, spec.Name, $"must be at least {min}, got {v}"));
    }

    // Checks every component node under `node`; plain values are accepted as they are.
    private static void Walk(ConfigNode node, string path, ConfigBinder binder, List<ConfigProblem> problems)
    {
        if (node.IsComponent) { binder.Check(node, typeof(object), path, problems); return; }
        if (node.Kind == ConfigNodeKind.Map)
            foreach (var (k, v) in node.Entries) Walk(v, path.Length == 0 ? k : $"{path}.{k}", binder, problems);
        else if (node.Kind == ConfigNodeKind.List)
            for (var i = 0; i < node.Items.Count; i++) Walk(node.Items[i], $"{path}[{i}]", binder, problems);
    }
}
