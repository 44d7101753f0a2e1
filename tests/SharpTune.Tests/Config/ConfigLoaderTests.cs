// Loading YAML: positions of nodes, quoted vs plain scalars, null spellings, anchors, and malformed input reported
// with file, line and column.
using SharpTune.Config;

namespace SharpTune.Tests.Config;

public sealed class ConfigLoaderTests
{
    [Fact]
    public void Parse_NestedKeys_RecordsLineAndColumnOfEachValue()
    {
        var root = ConfigLoader.Parse("a: 1\nmodel:\n  num_layers: 2\n  name: 'x'\n", "f.yaml");
        root.TryGet("model", out var model);
        model.TryGet("num_layers", out var layers);
        Assert.Equal(new SourceLocation("f.yaml", 3, 15), layers.Location);
        Assert.Equal("f.yaml:3:15", layers.Location.ToString());
        model.TryGet("name", out var name);
        Assert.True(name.IsQuoted);
        Assert.False(layers.IsQuoted);
    }

    [Theory]
    [InlineData("x:")]
    [InlineData("x: ~")]
    [InlineData("x: null")]
    [InlineData("x: NULL")]
    public void Parse_NullSpellings_GiveNullNode(string yaml)
    {
        ConfigLoader.Parse(yaml, "f").TryGet("x", out var x);
        Assert.Equal(ConfigNodeKind.Null, x.Kind);
    }

    [Fact]
    public void Parse_QuotedNull_IsAString()
    {
        ConfigLoader.Parse("x: 'null'", "f").TryGet("x", out var x);
        Assert.Equal(ConfigNodeKind.Scalar, x.Kind);
        Assert.Equal("null", x.Text);
    }

    [Fact]
    public void Parse_AnchorAndMergeKey_CopyTheAnchoredMap()
    {
        var root = ConfigLoader.Parse("base: &b {lr: 1, wd: 2}\nopt:\n  <<: *b\n  lr: 3\n", "f");
        var cfg = new SharpTuneConfig(root, ComponentRegistry.Empty);
        Assert.Equal(3, cfg.Get<int>("opt.lr"));
        Assert.Equal(2, cfg.Get<int>("opt.wd"));
    }

    [Theory]
    [InlineData("a: 1\nb: [1, 2\nc: 3\n", 2)]          // unclosed flow list: reported where it opens
    [InlineData("a: 1\n  b: 2\n", 2)]                  // bad indentation
    [InlineData("x: 1\na: 'unterminated\nb: 1\n", 2)]  // unterminated quote: reported where it opens
    public void Parse_MalformedYaml_NamesFileLineAndColumn(string yaml, int expectedLine)
    {
        var e = Assert.Throws<ConfigException>(() => ConfigLoader.Parse(yaml, "bad.yaml"));
        var p = Assert.Single(e.Problems);
        Assert.Equal("bad.yaml", p.Location!.Value.Source);
        Assert.Equal(expectedLine, p.Location.Value.Line);
        Assert.True(p.Location.Value.Column >= 1);
        Assert.StartsWith($"bad.yaml:{expectedLine}:", e.Message);
        Assert.Contains("malformed YAML", e.Message);
    }

    [Fact]
    public void Parse_DuplicateKey_NamesBothPositions()
    {
        var e = Assert.Throws<ConfigException>(() => ConfigLoader.Parse("a: 1\nb: 2\na: 3\n", "d.yaml"));
        Assert.Contains("duplicate key 'a'", e.Message);
        Assert.StartsWith("d.yaml:3:1", e.Message);
        Assert.Contains("d.yaml:1:4", e.Message);
    }

    [Fact]
    public void Parse_TopLevelList_IsRejected()
    {
        var e = Assert.Throws<ConfigException>(() => ConfigLoader.Parse("- 1\n- 2\n", "l.yaml"));
        Assert.Contains("map of keys at the top level", e.Message);
    }

    [Fact]
    public void LoadFile_MissingFile_NamesIt()
    {
        var e = Assert.Throws<ConfigException>(() => ConfigLoader.LoadFile("/nonexistent/x.yaml"));
        Assert.Contains("/nonexistent/x.yaml", e.Message);
    }

    [Fact]
    public void ToYaml_RoundTrip_KeepsTypesAndQuotedStrings()
    {
        const string yaml = "b: '1'\na: 1\nc: [x, 'true', null]\nd:\n  e: ''\n  f: {}\n  g: hello world\n";
        var root = ConfigLoader.Parse(yaml, "r");
        var text = ConfigWriter.ToYaml(root, sortKeys: true);
        Assert.True(text.IndexOf("a:", StringComparison.Ordinal) < text.IndexOf("b:", StringComparison.Ordinal));
        var back = ConfigLoader.Parse(text, "r2");
        back.TryGet("b", out var b);
        Assert.True(b.IsQuoted);
        back.TryGet("c", out var c);
        Assert.True(c.Items[1].IsQuoted);
        Assert.Equal(ConfigNodeKind.Null, c.Items[2].Kind);
        Assert.Equal(ConfigWriter.ToYaml(root, true), ConfigWriter.ToYaml(back, true));
    }
}
