// Command-line overrides, torchtune/OmegaConf dotlist style:
//   a.b.c=value   set (creating missing maps); value is parsed as YAML flow text, so `[x,y]`, `{k: v}`, `null`,
//                 `'quoted'` work, and it is typed later by the parameter it binds to
//   model=NAME    when `model` is a component map and NAME a plain word, sets `model._component_` (torchtune's
//                 component shorthand) and keeps the other keys
//   ~a.b          deletes a key
//   a.0=value     indexes into a list
// References: torchtune/config/_parse.py (TuneRecipeArgumentParser), _utils.py (_merge_yaml_and_cli_args).
namespace SharpTune.Config;

/// <summary>Applies <c>key=value</c> overrides to a config tree.</summary>
public static class Overrides
{
    /// <summary>
    /// Applies each override in order. Problems (bad syntax, setting through a scalar, deleting a missing key) are
    /// appended to <paramref name="problems"/>; the other overrides still apply.
    /// </summary>
    public static void Apply(ConfigNode root, IEnumerable<string> overrides, List<ConfigProblem> problems)
    {
        foreach (var arg in overrides)
        {
            var where = new SourceLocation($"override '{arg}'", 0, 0);
            try { ApplyOne(root, arg, where); }
            catch (ConfigException e) { problems.AddRange(e.Problems); }
        }
    }

    private static void ApplyOne(ConfigNode root, string arg, SourceLocation where)
    {
        if (arg.StartsWith('~'))
        {
            var delPath = Split(arg[1..], where, arg);
            var (parent, last) = Walk(root, delPath, where, create: false);
            var removed = parent.Kind == ConfigNodeKind.Map && parent.Remove(last);
            if (!removed)
                throw new ConfigException(where, arg[1..], $"cannot delete '{arg[1..]}': no such key{Names.Suggest(last, parent.Entries.Select(e => e.Key))}");
            return;
        }
        var eq = arg.IndexOf('=');
        if (eq <= 0)
            throw new ConfigException(where, "", $"override '{arg}' is not of the form key=value (or ~key to delete)");
        var keyText = arg[..eq].Trim();
        if (keyText.StartsWith('+')) keyText = keyText[1..]; // Hydra's "add a key" prefix: adding is the default here.
        var path = Split(keyText, where, arg);
        var value = ParseValue(arg[(eq + 1)..], where);
        var (container, key) = Walk(root, path, where, create: true);
        if (container.Kind == ConfigNodeKind.List)
        {
            container.SetItem(ListIndex(container, key, keyText, where), value);
            return;
        }
        if (container.TryGet(key, out var existing) && existing.IsComponent && value.Kind == ConfigNodeKind.Scalar && !value.IsQuoted)
        {
            // `model=NAME`: swap the component, keep its arguments.
            existing.Set(ConfigNode.ComponentKey, value);
            return;
        }
        container.Set(key, value);
    }

    private static string[] Split(string keyText, SourceLocation where, string arg)
    {
        var parts = keyText.Trim().Split('.');
        if (parts.Length == 0 || parts.Any(p => p.Length == 0))
            throw new ConfigException(where, keyText, $"override '{arg}' has an empty key or key segment");
        return parts;
    }

    // Returns the container of the last segment, creating maps on the way when asked.
    private static (ConfigNode Container, string Last) Walk(ConfigNode root, string[] path, SourceLocation where, bool create)
    {
        var node = root;
        for (var i = 0; i < path.Length - 1; i++)
        {
            var seg = path[i];
            var sofar = string.Join('.', path.Take(i + 1));
            ConfigNode next;
            if (node.Kind == ConfigNodeKind.List) next = node.Items[ListIndex(node, seg, sofar, where)];
            else if (node.TryGet(seg, out var child)) next = child;
            else if (create) { next = ConfigNode.Map(where); node.Set(seg, next); }
            else throw new ConfigException(where, sofar, $"no such key '{sofar}'{Names.Suggest(seg, node.Entries.Select(e => e.Key))}");
            if (next.Kind is not (ConfigNodeKind.Map or ConfigNodeKind.List))
            {
                if (!create || next.Kind != ConfigNodeKind.Null)
                    throw new ConfigException(where, sofar, $"cannot set a key under '{sofar}': it is {next.Describe()} (set at {next.Location}), not a map");
                next = ConfigNode.Map(where); // a null placeholder becomes a map
                node.Set(seg, next);
            }
            node = next;
        }
        return (node, path[^1]);
    }

    private static int ListIndex(ConfigNode list, string segment, string path, SourceLocation where)
    {
        if (int.TryParse(segment, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var i) && i < list.Items.Count)
            return i;
        throw new ConfigException(where, path, $"'{segment}' is not an index into the list at {list.Location} (it has {list.Items.Count} items)");
    }

    /// <summary>Parses an override's value as YAML flow text (empty means an empty string).</summary>
    internal static ConfigNode ParseValue(string text, SourceLocation where)
    {
        if (text.Length == 0) return ConfigNode.Scalar("", true, where);
        // YAML would read these as a comment, an anchor or an alias; on a command line they are meant literally.
        if (text[0] is '#' or '&' or '*') return ConfigNode.Scalar(text, true, where);
        ConfigNode parsed;
        try { parsed = ConfigLoader.Parse("v: " + text, where.Source); }
        catch (ConfigException)
        {
            // Not valid YAML (e.g. an unbalanced quote in a path): take the text literally, as a string.
            return ConfigNode.Scalar(text, false, where);
        }
        parsed.TryGet("v", out var v);
        return Relocate(v, where);
    }

    private static ConfigNode Relocate(ConfigNode node, SourceLocation where)
    {
        switch (node.Kind)
        {
            case ConfigNodeKind.Scalar: return ConfigNode.Scalar(node.Text!, node.IsQuoted, where);
            case ConfigNodeKind.Null: return ConfigNode.Null(where);
            case ConfigNodeKind.Map:
                var m = ConfigNode.Map(where);
                foreach (var (k, v) in node.Entries) m.Set(k, Relocate(v, where));
                return m;
            default:
                var l = ConfigNode.List(where);
                foreach (var v in node.Items) l.Add(Relocate(v, where));
                return l;
        }
    }
}
