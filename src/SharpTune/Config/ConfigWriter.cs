// Writes a ConfigNode tree back to YAML (for `cat --sort` and the resolved config a run saves), keeping strings
// that look like numbers, bools or null quoted so the file reads back to the same values.
using System.Text;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace SharpTune.Config;

/// <summary>Serialises config trees to YAML text and files.</summary>
public static class ConfigWriter
{
    /// <summary>YAML text for <paramref name="root"/>; map keys sorted ordinally when <paramref name="sortKeys"/>.</summary>
    /// <param name="root">The tree.</param>
    /// <param name="sortKeys">Sort map keys.</param>
    /// <param name="escapeInterpolation">
    /// Write a literal <c>${</c> as <c>\${</c>: use for an already resolved tree, so that reading the file back does not
    /// interpolate text that was literal.
    /// </param>
    public static string ToYaml(ConfigNode root, bool sortKeys = false, bool escapeInterpolation = false)
    {
        var sw = new StringWriter { NewLine = "\n" };
        var emitter = new Emitter(sw, new EmitterSettings().WithBestIndent(2));
        emitter.Emit(new StreamStart());
        emitter.Emit(new DocumentStart(null, null, isImplicit: true));
        Emit(emitter, root, sortKeys, escapeInterpolation);
        emitter.Emit(new DocumentEnd(isImplicit: true));
        emitter.Emit(new StreamEnd());
        return sw.ToString();
    }

    /// <summary>
    /// Writes a resolved tree to <paramref name="path"/> atomically (temp file, then rename); literal <c>${</c> is
    /// escaped unless <paramref name="escapeInterpolation"/> is false.
    /// </summary>
    public static void Save(ConfigNode root, string path, string? header = null, bool escapeInterpolation = true)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + $".tmp{Environment.ProcessId}";
        File.WriteAllText(tmp, (header ?? "") + ToYaml(root, false, escapeInterpolation), new UTF8Encoding(false));
        File.Move(tmp, full, overwrite: true);
    }

    private static void Emit(IEmitter emitter, ConfigNode node, bool sortKeys, bool escape)
    {
        switch (node.Kind)
        {
            case ConfigNodeKind.Null:
                emitter.Emit(new Scalar(AnchorName.Empty, TagName.Empty, "null", ScalarStyle.Plain, true, false));
                break;
            case ConfigNodeKind.Scalar:
                var text = escape ? node.Text!.Replace("${", "\\${", StringComparison.Ordinal) : node.Text!;
                var quote = node.IsQuoted && (text.Length == 0 || LooksTyped(text));
                var style = quote ? ScalarStyle.DoubleQuoted : ScalarStyle.Any;
                emitter.Emit(new Scalar(AnchorName.Empty, TagName.Empty, text, style, isPlainImplicit: !quote, isQuotedImplicit: true));
                break;
            case ConfigNodeKind.List:
                var flow = node.Items.All(i => i.Kind is ConfigNodeKind.Scalar or ConfigNodeKind.Null);
                emitter.Emit(new SequenceStart(AnchorName.Empty, TagName.Empty, true, flow ? SequenceStyle.Flow : SequenceStyle.Block));
                foreach (var item in node.Items) Emit(emitter, item, sortKeys, escape);
                emitter.Emit(new SequenceEnd());
                break;
            default:
                emitter.Emit(new MappingStart(AnchorName.Empty, TagName.Empty, true, node.Count == 0 ? MappingStyle.Flow : MappingStyle.Block));
                var entries = sortKeys ? node.Entries.OrderBy(e => e.Key, StringComparer.Ordinal) : node.Entries;
                foreach (var (key, value) in entries)
                {
                    emitter.Emit(new Scalar(AnchorName.Empty, TagName.Empty, key, LooksTyped(key) ? ScalarStyle.DoubleQuoted : ScalarStyle.Any, true, true));
                    Emit(emitter, value, sortKeys, escape);
                }
                emitter.Emit(new MappingEnd());
                break;
        }
    }

    // Plain text that YAML would read as null, a bool or a number.
    private static bool LooksTyped(string text) =>
        ConfigLoader.IsNullText(text)
        || ConfigBinder.TryScalar(text, typeof(bool), out _, out _)
        || ConfigBinder.TryScalar(text, typeof(double), out _, out _);
}
