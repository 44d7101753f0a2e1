// Resolves OmegaConf-style interpolation in a config tree, as torchtune configs use it (`output_dir: /tmp/x`,
// `checkpoint_dir: ${output_dir}/ckpt`). A value that is exactly `${a.b}` takes the referenced node with its type;
// `${...}` inside a longer string is replaced by the referenced scalar's text. References may nest
// (`${models.${size}.dim}`), may be relative (`${.sibling}`, `${..uncle}`), may chain through other interpolations,
// and `${oc.env:NAME}` / `${oc.env:NAME,default}` read environment variables. `\${` is a literal `${`.
// Cycles and unknown keys are reported with the location of the value that holds the reference.
// Reference: https://omegaconf.readthedocs.io/en/2.3_branch/usage.html#variable-interpolation
using System.Text;

namespace SharpTune.Config;

/// <summary>Resolves <c>${...}</c> references in place.</summary>
public static class Interpolator
{
    /// <summary>
    /// Replaces every interpolation under <paramref name="root"/> by its value. Problems are appended to
    /// <paramref name="problems"/>; a value that cannot be resolved is left as written.
    /// </summary>
    public static void Resolve(ConfigNode root, List<ConfigProblem> problems) => new Run(root, problems).ResolveTree(root, []);

    /// <summary>True when <paramref name="text"/> holds an unescaped <c>${</c>.</summary>
    public static bool HasInterpolation(string? text)
    {
        if (text is null) return false;
        for (var i = text.IndexOf("${", StringComparison.Ordinal); i >= 0; i = text.IndexOf("${", i + 2, StringComparison.Ordinal))
            if (i == 0 || text[i - 1] != '\\') return true;
        return false;
    }

    private sealed class Run(ConfigNode root, List<ConfigProblem> problems)
    {
        private readonly HashSet<ConfigNode> _inProgress = new(ReferenceEqualityComparer.Instance);
        private readonly HashSet<ConfigNode> _failed = new(ReferenceEqualityComparer.Instance);
        private readonly List<string> _chain = [];

        public void ResolveTree(ConfigNode node, List<string> path)
        {
            if (!_inProgress.Add(node)) return;
            _chain.Add(Join(path));
            try
            {
                if (node.Kind == ConfigNodeKind.Map)
                    foreach (var (key, child) in node.Entries.ToList())
                    {
                        var resolved = ResolveChild(child, [.. path, key]);
                        if (!ReferenceEquals(resolved, child)) node.Set(key, resolved);
                    }
                else if (node.Kind == ConfigNodeKind.List)
                    for (var i = 0; i < node.Items.Count; i++)
                    {
                        var child = node.Items[i];
                        var resolved = ResolveChild(child, [.. path, i.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
                        if (!ReferenceEquals(resolved, child)) node.SetItem(i, resolved);
                    }
            }
            finally
            {
                _inProgress.Remove(node);
                _chain.RemoveAt(_chain.Count - 1);
            }
        }

        private ConfigNode ResolveChild(ConfigNode child, List<string> path)
        {
            if (child.Kind == ConfigNodeKind.Scalar) return HasInterpolation(child.Text) || child.Text!.Contains("\\${", StringComparison.Ordinal) ? ResolveScalar(child, path) : child;
            ResolveTree(child, path);
            return child;
        }

        private ConfigNode ResolveScalar(ConfigNode node, List<string> path)
        {
            if (_failed.Contains(node)) return node;
            if (!_inProgress.Add(node))
            {
                Fail(node, path, $"interpolation cycle: {string.Join(" -> ", _chain.SkipWhile(c => c != Join(path)).Append(Join(path)))}");
                return node;
            }
            _chain.Add(Join(path));
            try
            {
                var text = node.Text!;
                var end = MatchBrace(text, 2);
                if (text.StartsWith("${", StringComparison.Ordinal) && end == text.Length - 1)
                {
                    // The whole value is one reference: take the referenced node, type and all.
                    var key = Expand(text[2..end], node, path);
                    if (key is null) return node;
                    var target = Lookup(key, node, path);
                    return target?.Clone(node.Location) ?? node;
                }
                var expanded = Expand(text, node, path);
                return expanded is null ? node : ConfigNode.Scalar(expanded, quoted: true, node.Location);
            }
            finally
            {
                _inProgress.Remove(node);
                _chain.RemoveAt(_chain.Count - 1);
            }
        }

        // Expands every ${...} in text to its scalar text; null (after reporting) on failure.
        private string? Expand(string text, ConfigNode owner, List<string> path)
        {
            var sb = new StringBuilder();
            for (var i = 0; i < text.Length;)
            {
                if (text[i] == '\\' && i + 2 < text.Length && text[i + 1] == '$' && text[i + 2] == '{') { sb.Append("${"); i += 3; continue; }
                if (text[i] == '$' && i + 1 < text.Length && text[i + 1] == '{')
                {
                    var end = MatchBrace(text, i + 2);
                    if (end < 0) { Fail(owner, path, $"bad interpolation in '{owner.Text}': '${{' at offset {i} has no closing '}}'"); return null; }
                    var key = Expand(text[(i + 2)..end], owner, path);
                    if (key is null) return null;
                    var target = Lookup(key, owner, path);
                    if (target is null) return null;
                    switch (target.Kind)
                    {
                        case ConfigNodeKind.Scalar: sb.Append(target.Text); break;
                        case ConfigNodeKind.Null: sb.Append("null"); break;
                        default:
                            Fail(owner, path, $"bad interpolation in '{owner.Text}': '${{{key}}}' is {target.Describe()}, which cannot be put inside a string");
                            return null;
                    }
                    i = end + 1;
                    continue;
                }
                sb.Append(text[i]);
                i++;
            }
            return sb.ToString();
        }

        // Finds the node a reference names, resolving interpolations met on the way.
        private ConfigNode? Lookup(string key, ConfigNode owner, List<string> path)
        {
            key = key.Trim();
            if (key.StartsWith("oc.env:", StringComparison.Ordinal) || key.StartsWith("env:", StringComparison.Ordinal))
            {
                var arg = key[(key.IndexOf(':') + 1)..];
                var comma = arg.IndexOf(',');
                var name = (comma >= 0 ? arg[..comma] : arg).Trim();
                var value = Environment.GetEnvironmentVariable(name);
                if (value is not null) return ConfigNode.Scalar(value, true, owner.Location);
                if (comma >= 0) return ConfigLoader.IsNullText(arg[(comma + 1)..].Trim()) ? ConfigNode.Null(owner.Location)
                    : ConfigNode.Scalar(arg[(comma + 1)..].Trim().Trim('\'', '"'), true, owner.Location);
                Fail(owner, path, $"bad interpolation '${{{key}}}': environment variable '{name}' is not set and no default is given");
                return null;
            }
            if (key.Length == 0) { Fail(owner, path, "bad interpolation '${}': empty key"); return null; }

            List<string> segments;
            if (key[0] == '.')
            {
                // Relative: one dot is the map holding this value, each further dot one level up.
                var dots = key.TakeWhile(c => c == '.').Count();
                var up = dots - 1;
                if (up > path.Count - 1) { Fail(owner, path, $"bad interpolation '${{{key}}}': goes above the top of the config"); return null; }
                segments = [.. path.Take(path.Count - 1 - up), .. key[dots..].Split('.', StringSplitOptions.RemoveEmptyEntries)];
            }
            else segments = [.. key.Split('.')];
            if (segments.Any(s => s.Length == 0)) { Fail(owner, path, $"bad interpolation '${{{key}}}': empty key segment"); return null; }

            var node = root;
            var walked = new List<string>();
            foreach (var segment in segments)
            {
                ConfigNode? next = null;
                if (node.Kind == ConfigNodeKind.Map && node.TryGet(segment, out var child))
                {
                    next = child;
                    if (child.Kind == ConfigNodeKind.Scalar && HasInterpolation(child.Text))
                    {
                        next = ResolveScalar(child, [.. walked, segment]);
                        if (!ReferenceEquals(next, child)) node.Set(segment, next);
                    }
                }
                else if (node.Kind == ConfigNodeKind.List && int.TryParse(segment, out var index) && index >= 0 && index < node.Items.Count)
                {
                    next = node.Items[index];
                    if (next.Kind == ConfigNodeKind.Scalar && HasInterpolation(next.Text))
                    {
                        var resolved = ResolveScalar(next, [.. walked, segment]);
                        if (!ReferenceEquals(resolved, next)) node.SetItem(index, resolved);
                        next = resolved;
                    }
                }
                if (next is null)
                {
                    var where = walked.Count == 0 ? "at the top level" : $"under '{Join(walked)}'";
                    Fail(owner, path, $"bad interpolation '${{{key}}}': key '{segment}' not found {where}{Names.Suggest(segment, node.Entries.Select(e => e.Key))}");
                    return null;
                }
                walked.Add(segment);
                node = next;
            }
            if (node.Kind == ConfigNodeKind.Scalar && HasInterpolation(node.Text)) return null; // failed above, already reported
            if (node.Kind is ConfigNodeKind.Map or ConfigNodeKind.List)
            {
                if (_inProgress.Contains(node))
                {
                    Fail(owner, path, $"interpolation cycle: '{Join(path)}' refers to '{Join(walked)}', which contains it");
                    return null;
                }
                ResolveTree(node, walked);
            }
            return node;
        }

        private void Fail(ConfigNode node, List<string> path, string message)
        {
            node.IsUnresolved = true;
            if (_failed.Add(node)) problems.Add(new ConfigProblem(node.Location, Join(path), message));
        }

        private static string Join(List<string> path) => string.Join('.', path);

        // Index of the '}' that closes a '${' whose content starts at `from`, honouring nested '${...}'; -1 if none.
        private static int MatchBrace(string text, int from)
        {
            var depth = 1;
            for (var i = from; i < text.Length; i++)
            {
                if (text[i] == '$' && i + 1 < text.Length && text[i + 1] == '{') { depth++; i++; }
                else if (text[i] == '}' && --depth == 0) return i;
            }
            return -1;
        }
    }
}
