// ${...} interpolation: whole-value references keep type, references inside strings, nesting, chains, relative
// references, environment variables, escapes, and the errors (unknown key, cycle, unclosed brace) with file:line.
using SharpTune.Config;

namespace SharpTune.Tests.Config;

public sealed class InterpolatorTests
{
    private static SharpTuneConfig Load(string yaml, params string[] overrides) => SharpTuneConfig.FromYaml(yaml, "i.yaml", overrides);

    private static IReadOnlyList<ConfigProblem> Problems(string yaml) =>
        SharpTuneConfig.ValidateYaml(yaml, "i.yaml", null, ComponentRegistry.Empty).Problems;

    [Fact]
    public void Resolve_WholeValueReference_KeepsTypeOfTarget()
    {
        var cfg = Load("n: 4\nm: ${n}\nlist: [1, 2]\ncopy: ${list}\n");
        Assert.Equal(4, cfg.Get<int>("m"));
        Assert.Equal([1, 2], cfg.Get<int[]>("copy"));
    }

    [Fact]
    public void Resolve_ReferenceInsideString_Concatenates()
    {
        var cfg = Load("output_dir: /tmp/run\nckpt: ${output_dir}/ckpt_${n}\nn: 3\n");
        Assert.Equal("/tmp/run/ckpt_3", cfg.Get<string>("ckpt"));
    }

    [Fact]
    public void Resolve_ChainedAndNestedKey_Resolve()
    {
        var cfg = Load("size: small\ndims: {small: 64, big: 128}\nd: ${dims.${size}}\ne: ${d}\nf: x${e}\n");
        Assert.Equal(64, cfg.Get<int>("d"));
        Assert.Equal(64, cfg.Get<int>("e"));
        Assert.Equal("x64", cfg.Get<string>("f"));
    }

    [Fact]
    public void Resolve_RelativeReference_UsesEnclosingMap()
    {
        var cfg = Load("top: 1\na:\n  x: 5\n  y: ${.x}\n  z: ${..top}\n");
        Assert.Equal(5, cfg.Get<int>("a.y"));
        Assert.Equal(1, cfg.Get<int>("a.z"));
    }

    [Fact]
    public void Resolve_AfterOverride_SeesOverriddenValue()
    {
        var cfg = Load("output_dir: /a\nlog: ${output_dir}/log\n", "output_dir=/b");
        Assert.Equal("/b/log", cfg.Get<string>("log"));
    }

    [Fact]
    public void Resolve_EnvironmentVariable_WithAndWithoutDefault()
    {
        Environment.SetEnvironmentVariable("SHARPTUNE_TEST_ENV_X", "hello");
        var cfg = Load("a: ${oc.env:SHARPTUNE_TEST_ENV_X}\nb: ${oc.env:SHARPTUNE_TEST_ENV_UNSET_Y,fallback}\n");
        Assert.Equal("hello", cfg.Get<string>("a"));
        Assert.Equal("fallback", cfg.Get<string>("b"));
        Assert.Contains(Problems("a: ${oc.env:SHARPTUNE_TEST_ENV_UNSET_Y}"), p => p.Message.Contains("is not set"));
    }

    [Fact]
    public void Resolve_EscapedDollar_IsLiteral()
    {
        Assert.Equal("${not_a_ref}", Load("a: \\${not_a_ref}\n").Get<string>("a"));
    }

    [Fact]
    public void ToYaml_ResolvedConfig_ReadsBackToSameValues()
    {
        var cfg = Load("out: /o\nlog: ${out}/log\nlit: \\${kept}\nn: ${m}\nm: 3\n");
        var again = Load(cfg.ToYaml());
        Assert.Equal("/o/log", again.Get<string>("log"));
        Assert.Equal("${kept}", again.Get<string>("lit"));
        Assert.Equal(3, again.Get<int>("n"));
    }

    [Fact]
    public void Resolve_UnknownKey_ReportsLocationAndSuggestion()
    {
        var p = Assert.Single(Problems("output_dir: /x\n\nlog: ${output_dri}/log\n"));
        Assert.Equal("i.yaml:3:6", p.Location.ToString());
        Assert.Equal("log", p.Path);
        Assert.Contains("key 'output_dri' not found", p.Message);
        Assert.Contains("did you mean 'output_dir'", p.Message);
    }

    [Fact]
    public void Resolve_Cycle_IsAnErrorNotAHang()
    {
        var problems = Problems("a: ${b}\nb: ${c}\nc: x${a}\n");
        Assert.NotEmpty(problems);
        Assert.Contains(problems, p => p.Message.Contains("interpolation cycle"));
    }

    [Fact]
    public void Resolve_SelfReferenceThroughMap_IsACycle()
    {
        Assert.Contains(Problems("a:\n  b: ${a}\n"), p => p.Message.Contains("cycle"));
    }

    [Fact]
    public void Resolve_UnclosedBrace_IsReported()
    {
        var p = Assert.Single(Problems("a: ${b\nb: 1\n"));
        Assert.Contains("no closing '}'", p.Message);
    }

    [Fact]
    public void Resolve_MapInsideString_IsReported()
    {
        var p = Assert.Single(Problems("m: {x: 1}\ns: pre_${m}\n"));
        Assert.Contains("cannot be put inside a string", p.Message);
    }
}
