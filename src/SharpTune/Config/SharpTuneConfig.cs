// A loaded, overridden, interpolated config plus the registry that builds its components: what a recipe receives.
// Typed getters for plain keys (`cfg.Get<int>("batch_size")`) and torchtune-style `Instantiate` for component
// nodes (`cfg.Instantiate<Optimizer>("optimizer", model.parameters())`), with errors that name key and file:line.
// Reference: torchtune/config/_instantiate.py, _utils.py; OmegaConf DictConfig.
namespace SharpTune.Config;

/// <summary>The outcome of loading and validating a config: the config when it is valid, and every problem.</summary>
/// <param name="Config">The loaded config; null when the YAML itself could not be read.</param>
/// <param name="Problems">Every problem found; empty when valid.</param>
public sealed record ConfigValidation(SharpTuneConfig? Config, IReadOnlyList<ConfigProblem> Problems)
{
    /// <summary>True when no problem was found.</summary>
    public bool IsValid => Problems.Count == 0 && Config is not null;
}

/// <summary>A resolved config and its component registry.</summary>
public sealed class SharpTuneConfig
{
    private readonly ConfigBinder _binder;

    /// <summary>Wraps an already resolved tree.</summary>
    public SharpTuneConfig(ConfigNode root, ComponentRegistry registry, string? sourcePath = null)
    {
        Root = root;
        Registry = registry;
        SourcePath = sourcePath;
        _binder = new ConfigBinder(registry);
    }

    /// <summary>The resolved tree.</summary>
    public ConfigNode Root { get; }

    /// <summary>The components this config can build.</summary>
    public ComponentRegistry Registry { get; }

    /// <summary>The YAML file it came from, if any.</summary>
    public string? SourcePath { get; }

    /// <summary>
    /// Loads <paramref name="path"/>, applies <paramref name="overrides"/>, resolves interpolation and validates,
    /// collecting every problem instead of stopping at the first.
    /// </summary>
    public static ConfigValidation Validate(string path, IEnumerable<string>? overrides, ComponentRegistry registry,
        IReadOnlyList<ConfigKeySpec>? topLevelKeys = null)
    {
        ConfigNode root;
        try { root = ConfigLoader.LoadFile(path); }
        catch (ConfigException e) { return new ConfigValidation(null, e.Problems); }
        return ValidateTree(root, overrides, registry, topLevelKeys, path);
    }

    /// <summary>As <see cref="Validate(string, IEnumerable{string}?, ComponentRegistry, IReadOnlyList{ConfigKeySpec}?)"/> for YAML text.</summary>
    public static ConfigValidation ValidateYaml(string yaml, string source, IEnumerable<string>? overrides, ComponentRegistry registry,
        IReadOnlyList<ConfigKeySpec>? topLevelKeys = null)
    {
        ConfigNode root;
        try { root = ConfigLoader.Parse(yaml, source); }
        catch (ConfigException e) { return new ConfigValidation(null, e.Problems); }
        return ValidateTree(root, overrides, registry, topLevelKeys, source);
    }

    /// <summary>Loads, overrides, resolves and validates; throws one exception listing every problem.</summary>
    /// <exception cref="ConfigException">Any problem (all of them in <see cref="ConfigException.Problems"/>).</exception>
    public static SharpTuneConfig Load(string path, IEnumerable<string>? overrides = null, ComponentRegistry? registry = null,
        IReadOnlyList<ConfigKeySpec>? topLevelKeys = null)
    {
        var result = Validate(path, overrides, registry ?? ComponentRegistry.Empty, topLevelKeys);
        return result.IsValid ? result.Config! : throw new ConfigException(result.Problems);
    }

    /// <summary>As <see cref="Load"/> for YAML text named <paramref name="source"/>.</summary>
    public static SharpTuneConfig FromYaml(string yaml, string source = "<yaml>", IEnumerable<string>? overrides = null,
        ComponentRegistry? registry = null, IReadOnlyList<ConfigKeySpec>? topLevelKeys = null)
    {
        var result = ValidateYaml(yaml, source, overrides, registry ?? ComponentRegistry.Empty, topLevelKeys);
        return result.IsValid ? result.Config! : throw new ConfigException(result.Problems);
    }

    private static ConfigValidation ValidateTree(ConfigNode root, IEnumerable<string>? overrides, ComponentRegistry registry,
        IReadOnlyList<ConfigKeySpec>? topLevelKeys, string source)
    {
        var problems = new List<ConfigProblem>();
        Overrides.Apply(root, overrides ?? [], problems);
        Interpolator.Resolve(root, problems);
        problems.AddRange(ConfigValidator.Validate(root, registry, topLevelKeys, source));
        return new ConfigValidation(new SharpTuneConfig(root, registry, source), problems);
    }

    /// <summary>True when the dotted <paramref name="path"/> exists (list items by index: <c>a.0.b</c>).</summary>
    public bool Has(string path) => Find(path) is not null;

    /// <summary>The node at <paramref name="path"/>, or null.</summary>
    public ConfigNode? Find(string path)
    {
        var node = Root;
        foreach (var segment in path.Split('.'))
        {
            if (node.Kind == ConfigNodeKind.Map && node.TryGet(segment, out var child)) node = child;
            else if (node.Kind == ConfigNodeKind.List && int.TryParse(segment, out var i) && i >= 0 && i < node.Items.Count) node = node.Items[i];
            else return null;
        }
        return node;
    }

    /// <summary>True when <paramref name="path"/> is present and not null (a null value means "not set", as in torchtune).</summary>
    public bool IsSet(string path) => Find(path) is { Kind: not ConfigNodeKind.Null };

    /// <summary>The value at <paramref name="path"/> converted to <typeparamref name="T"/>.</summary>
    /// <exception cref="ConfigException">The key is missing, or its value does not fit the type (names key and file:line).</exception>
    public T Get<T>(string path)
    {
        var node = Find(path) ?? throw new ConfigException(new SourceLocation(SourcePath ?? Root.Location.Source, 0, 0), path,
            $"missing required key '{path}' ({ConfigBinder.TypeName(typeof(T))}){Names.Suggest(LastSegment(path), SiblingKeys(path))}");
        return (T)_binder.Build(node, typeof(T), path)!;
    }

    /// <summary>The value at <paramref name="path"/>, or <paramref name="defaultValue"/> when the key is absent or null.</summary>
    /// <exception cref="ConfigException">The value does not fit the type.</exception>
    public T Get<T>(string path, T defaultValue)
    {
        var node = Find(path);
        if (node is null || node.Kind == ConfigNodeKind.Null) return defaultValue;
        return (T)_binder.Build(node, typeof(T), path)!;
    }

    /// <summary>
    /// Builds the component at <paramref name="path"/>; <paramref name="args"/> fill the factory's first parameters
    /// (torchtune's <c>instantiate(cfg.optimizer, model.parameters())</c>).
    /// </summary>
    public T Instantiate<T>(string path, params object?[] args)
    {
        var node = Find(path) ?? throw new ConfigException(new SourceLocation(SourcePath ?? Root.Location.Source, 0, 0), path,
            $"missing required key '{path}' (a component building {ConfigBinder.TypeName(typeof(T))})");
        return Instantiate<T>(node, path, args);
    }

    /// <summary>Builds <paramref name="node"/> (a component node, or a plain value) as <typeparamref name="T"/>.</summary>
    public T Instantiate<T>(ConfigNode node, string path, params object?[] args)
    {
        if (!node.IsComponent && args.Length > 0)
            throw new ConfigException(node.Location, path, $"expected a component (a map with '{ConfigNode.ComponentKey}'), got {node.Describe()}");
        return (T)_binder.Build(node, typeof(T), path, args)!;
    }

    /// <summary>Builds the component at <paramref name="path"/> with recipe-supplied arguments by parameter name.</summary>
    public T InstantiateWith<T>(string path, IReadOnlyDictionary<string, object?> named)
    {
        var node = Find(path) ?? throw new ConfigException(new SourceLocation(SourcePath ?? Root.Location.Source, 0, 0), path,
            $"missing required key '{path}' (a component building {ConfigBinder.TypeName(typeof(T))})");
        return (T)_binder.Build(node, typeof(T), path, null, named)!;
    }

    /// <summary>The resolved config as YAML.</summary>
    public string ToYaml(bool sortKeys = false) => ConfigWriter.ToYaml(Root, sortKeys, escapeInterpolation: true);

    /// <summary>Writes the resolved config atomically (what a run saves as <c>sharptune_config.yaml</c>).</summary>
    public void Save(string path) => ConfigWriter.Save(Root, path);

    private static string LastSegment(string path) => path[(path.LastIndexOf('.') + 1)..];

    private IEnumerable<string> SiblingKeys(string path)
    {
        var dot = path.LastIndexOf('.');
        var parent = dot < 0 ? Root : Find(path[..dot]);
        return parent?.Entries.Select(e => e.Key) ?? [];
    }
}
