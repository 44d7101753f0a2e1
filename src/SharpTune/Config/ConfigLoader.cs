// Reads YAML into a ConfigNode tree with file:line:column on every node, using YamlDotNet's event parser so that
// duplicate keys, anchors/aliases and malformed input are reported with exact positions.
// YAML 1.2 spec: https://yaml.org/spec/1.2.2/ ; YamlDotNet: https://github.com/aaubry/YamlDotNet
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace SharpTune.Config;

/// <summary>Parses YAML text into a <see cref="ConfigNode"/> tree.</summary>
public static class ConfigLoader
{
    /// <summary>Reads and parses a YAML file; the root must be a map (an empty file is an empty map).</summary>
    /// <exception cref="ConfigException">The file is missing or is not valid YAML (names file, line, column).</exception>
    public static ConfigNode LoadFile(string path)
    {
        if (!File.Exists(path)) throw new ConfigException(null, "", $"config file '{path}' does not exist");
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Parses YAML text; <paramref name="source"/> names it in locations.</summary>
    public static ConfigNode Parse(string yaml, string source)
    {
        var last = new Mark[] { Mark.Empty };
        try
        {
            var parser = new Parser(new StringReader(yaml));
            parser.Consume<StreamStart>();
            if (parser.TryConsume<StreamEnd>(out _)) return ConfigNode.Map(new SourceLocation(source, 1, 1));
            parser.Consume<DocumentStart>();
            ConfigNode root;
            if (parser.Accept<DocumentEnd>(out _)) root = ConfigNode.Map(new SourceLocation(source, 1, 1));
            else root = ReadNode(parser, source, new Dictionary<string, ConfigNode>(StringComparer.Ordinal), last);
            parser.Consume<DocumentEnd>();
            if (parser.Accept<DocumentStart>(out var second))
                throw new ConfigException(At(source, second.Start), "", "malformed YAML: a config file holds one document, found a second '---'");
            if (root.Kind == ConfigNodeKind.Null) return ConfigNode.Map(root.Location);
            if (root.Kind != ConfigNodeKind.Map)
                throw new ConfigException(root.Location, "", $"a config must be a map of keys at the top level, found {root.Describe()}");
            return root;
        }
        catch (YamlException e)
        {
            throw new ConfigException(At(source, e.Start), "", $"malformed YAML: {StripMark(e.Message)}");
        }
        catch (InvalidOperationException e) when (e.StackTrace?.Contains("YamlDotNet.Core", StringComparison.Ordinal) == true)
        {
            // YamlDotNet's scanner fails this way on some malformed input (e.g. an unclosed flow list); the best
            // position we have is the last node it read.
            throw new ConfigException(At(source, last[0]), "", "malformed YAML after this point (an unclosed '[', '{' or quote?)");
        }
    }

    private static ConfigNode ReadNode(IParser parser, string source, Dictionary<string, ConfigNode> anchors, Mark[] last)
    {
        if (parser.Current is { } current) last[0] = current.Start;
        if (parser.TryConsume<AnchorAlias>(out var alias))
        {
            if (!anchors.TryGetValue(alias.Value.Value, out var target))
                throw new ConfigException(At(source, alias.Start), "", $"malformed YAML: unknown alias '*{alias.Value}'");
            return target.Clone(At(source, alias.Start));
        }
        if (parser.TryConsume<Scalar>(out var scalar))
        {
            var loc = At(source, scalar.Start);
            var quoted = scalar.Style is ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted or ScalarStyle.Literal or ScalarStyle.Folded
                || (!scalar.Tag.IsEmpty && !scalar.Tag.IsNonSpecific && scalar.Tag.Value is "tag:yaml.org,2002:str" or "!!str");
            var node = !quoted && IsNullText(scalar.Value) ? ConfigNode.Null(loc) : ConfigNode.Scalar(scalar.Value, quoted, loc);
            Remember(anchors, scalar.Anchor, node);
            return node;
        }
        if (parser.TryConsume<SequenceStart>(out var seq))
        {
            var list = ConfigNode.List(At(source, seq.Start));
            while (!parser.TryConsume<SequenceEnd>(out _)) list.Add(ReadNode(parser, source, anchors, last));
            Remember(anchors, seq.Anchor, list);
            return list;
        }
        var start = parser.Consume<MappingStart>();
        var map = ConfigNode.Map(At(source, start.Start));
        var merged = new HashSet<string>(StringComparer.Ordinal);
        while (!parser.TryConsume<MappingEnd>(out _))
        {
            var keyStart = parser.Current?.Start ?? start.Start;
            var keyNode = ReadNode(parser, source, anchors, last);
            if (keyNode.Kind != ConfigNodeKind.Scalar)
                throw new ConfigException(At(source, keyStart), "", $"malformed YAML: map keys must be plain text, found {keyNode.Describe()}");
            var value = ReadNode(parser, source, anchors, last);
            var key = keyNode.Text!;
            if (key == "<<" && !keyNode.IsQuoted)
            {
                // YAML merge key: copy the aliased map's entries that this map does not set itself.
                if (value.Kind != ConfigNodeKind.Map)
                    throw new ConfigException(value.Location, "<<", "malformed YAML: '<<' must merge a map");
                foreach (var (k, v) in value.Entries)
                    if (!map.ContainsKey(k)) { map.Set(k, v); merged.Add(k); }
                continue;
            }
            if (map.TryGet(key, out var previous) && !merged.Remove(key))
                throw new ConfigException(keyNode.Location, key, $"malformed YAML: duplicate key '{key}' (first set at {previous.Location})");
            map.Set(key, value);
        }
        Remember(anchors, start.Anchor, map);
        return map;
    }

    /// <summary>True for the YAML 1.2 core-schema spellings of null.</summary>
    internal static bool IsNullText(string text) => text is "" or "~" or "null" or "Null" or "NULL";

    private static void Remember(Dictionary<string, ConfigNode> anchors, AnchorName anchor, ConfigNode node)
    {
        if (!anchor.IsEmpty) anchors[anchor.Value] = node;
    }

    private static SourceLocation At(string source, Mark mark) => new(source, (int)Math.Max(1, mark.Line), (int)Math.Max(1, mark.Column));

    // YamlDotNet prefixes messages with "(Line: 3, Col: 5, Idx: 20) - (Line: ...): "; the location is ours to print.
    private static string StripMark(string message)
    {
        var i = message.IndexOf("): ", StringComparison.Ordinal);
        return message.StartsWith("(Line:", StringComparison.Ordinal) && i >= 0 ? message[(i + 3)..] : message;
    }
}
