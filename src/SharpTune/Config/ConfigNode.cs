// The in-memory tree of a YAML config: maps, lists, scalars and nulls, each remembering where it came from
// (file:line:column, or the command-line override that set it) so every error can point at its source.
// Scalars keep their raw text and whether they were quoted; they are typed only when bound to a parameter,
// as torchtune/OmegaConf do with dotlist overrides. Reference: https://omegaconf.readthedocs.io/
namespace SharpTune.Config;

/// <summary>Where a config value came from.</summary>
/// <param name="Source">A file path, or a description such as <c>override 'a.b=1'</c>.</param>
/// <param name="Line">1-based line, or 0 when the source is not a file.</param>
/// <param name="Column">1-based column, or 0 when the source is not a file.</param>
public readonly record struct SourceLocation(string Source, int Line, int Column)
{
    /// <summary><c>file:line:column</c> for files, the source description otherwise.</summary>
    public override string ToString() => Line > 0 ? $"{Source}:{Line}:{Column}" : Source;
}

/// <summary>The kind of a <see cref="ConfigNode"/>.</summary>
public enum ConfigNodeKind
{
    /// <summary>A text value (typed when bound).</summary>
    Scalar,
    /// <summary>YAML <c>null</c>, <c>~</c> or an empty value.</summary>
    Null,
    /// <summary>An ordered key/value map.</summary>
    Map,
    /// <summary>An ordered list.</summary>
    List,
}

/// <summary>One node of a config tree.</summary>
public sealed class ConfigNode
{
    /// <summary>The key that names a node's component: <c>_component_</c>.</summary>
    public const string ComponentKey = "_component_";

    private readonly OrderedDictionary<string, ConfigNode>? _map;
    private readonly List<ConfigNode>? _items;

    private ConfigNode(ConfigNodeKind kind, string? text, bool quoted, SourceLocation location)
    {
        Kind = kind;
        Text = text;
        IsQuoted = quoted;
        Location = location;
        if (kind == ConfigNodeKind.Map) _map = new OrderedDictionary<string, ConfigNode>(StringComparer.Ordinal);
        if (kind == ConfigNodeKind.List) _items = [];
    }

    /// <summary>What this node is.</summary>
    public ConfigNodeKind Kind { get; }

    /// <summary>The raw text of a scalar; null for other kinds.</summary>
    public string? Text { get; }

    /// <summary>True when the scalar was quoted in YAML (so it is a string, never a number or bool).</summary>
    public bool IsQuoted { get; }

    /// <summary>True when interpolation of this value failed (the failure is already reported).</summary>
    internal bool IsUnresolved { get; set; }

    /// <summary>Where this node was written.</summary>
    public SourceLocation Location { get; }

    /// <summary>The map's entries in file order (empty for non-maps).</summary>
    public IEnumerable<KeyValuePair<string, ConfigNode>> Entries => _map ?? Enumerable.Empty<KeyValuePair<string, ConfigNode>>();

    /// <summary>The list's items (empty for non-lists).</summary>
    public IReadOnlyList<ConfigNode> Items => _items ?? (IReadOnlyList<ConfigNode>)Array.Empty<ConfigNode>();

    /// <summary>Number of entries (maps) or items (lists).</summary>
    public int Count => _map?.Count ?? _items?.Count ?? 0;

    /// <summary>The <c>_component_</c> name when this is a component map, else null.</summary>
    public string? ComponentName =>
        _map is not null && _map.TryGetValue(ComponentKey, out var c) && c.Kind == ConfigNodeKind.Scalar ? c.Text : null;

    /// <summary>True for a map holding a <c>_component_</c> key.</summary>
    public bool IsComponent => _map?.ContainsKey(ComponentKey) == true;

    /// <summary>Creates a scalar.</summary>
    public static ConfigNode Scalar(string text, bool quoted, SourceLocation location) =>
        new(ConfigNodeKind.Scalar, text, quoted, location);

    /// <summary>Creates a null.</summary>
    public static ConfigNode Null(SourceLocation location) => new(ConfigNodeKind.Null, null, false, location);

    /// <summary>Creates an empty map.</summary>
    public static ConfigNode Map(SourceLocation location) => new(ConfigNodeKind.Map, null, false, location);

    /// <summary>Creates an empty list.</summary>
    public static ConfigNode List(SourceLocation location) => new(ConfigNodeKind.List, null, false, location);

    /// <summary>Looks up a map key.</summary>
    public bool TryGet(string key, out ConfigNode value)
    {
        if (_map is not null && _map.TryGetValue(key, out var v)) { value = v; return true; }
        value = null!;
        return false;
    }

    /// <summary>True when this map has <paramref name="key"/>.</summary>
    public bool ContainsKey(string key) => _map?.ContainsKey(key) == true;

    /// <summary>Adds or replaces a map entry, keeping the original position of a replaced key.</summary>
    public void Set(string key, ConfigNode value)
    {
        if (_map is null) throw new InvalidOperationException($"{Location}: cannot set key '{key}' on a {Kind}");
        _map[key] = value;
    }

    /// <summary>Removes a map entry; false when it was not there.</summary>
    public bool Remove(string key) => _map?.Remove(key) == true;

    /// <summary>Appends an item to a list.</summary>
    public void Add(ConfigNode item)
    {
        if (_items is null) throw new InvalidOperationException($"{Location}: cannot append to a {Kind}");
        _items.Add(item);
    }

    /// <summary>Replaces a list item.</summary>
    public void SetItem(int index, ConfigNode item)
    {
        if (_items is null) throw new InvalidOperationException($"{Location}: cannot index a {Kind}");
        _items[index] = item;
    }

    /// <summary>A deep copy; <paramref name="location"/> replaces the root's location when given.</summary>
    public ConfigNode Clone(SourceLocation? location = null)
    {
        var loc = location ?? Location;
        switch (Kind)
        {
            case ConfigNodeKind.Scalar: return Scalar(Text!, IsQuoted, loc);
            case ConfigNodeKind.Null: return Null(loc);
            case ConfigNodeKind.Map:
                var m = Map(loc);
                foreach (var (k, v) in _map!) m.Set(k, v.Clone());
                return m;
            default:
                var l = List(loc);
                foreach (var v in _items!) l.Add(v.Clone());
                return l;
        }
    }

    /// <summary>A short description for error messages: the scalar's text or the node kind.</summary>
    public string Describe() => Kind switch
    {
        ConfigNodeKind.Scalar => $"'{Text}'",
        ConfigNodeKind.Null => "null",
        ConfigNodeKind.Map when IsComponent => $"component '{ComponentName}'",
        ConfigNodeKind.Map => "a map",
        _ => "a list",
    };
}
