// key=value overrides: nested set, creation, lists, null, deletion, component shorthand, list index, typing by the
// target parameter, and the errors for bad syntax and impossible paths.
using SharpTune.Config;

namespace SharpTune.Tests.Config;

public sealed class OverridesTests
{
    private const string Yaml = """
        batch_size: 4
        model:
          _component_: test.models.tiny
          num_layers: 2
          lora_targets: [q_proj, v_proj]
        optimizer:
          _component_: test.optim.AdamW
          lr: 3e-4
        tags: [a, b]
        """;

    private static SharpTuneConfig Load(params string[] overrides) =>
        SharpTuneConfig.FromYaml(Yaml, "o.yaml", overrides, TestComponents.Registry);

    private static IReadOnlyList<ConfigProblem> Problems(params string[] overrides) =>
        SharpTuneConfig.ValidateYaml(Yaml, "o.yaml", overrides, TestComponents.Registry).Problems;

    [Fact]
    public void Apply_NestedKey_SetsValueTypedByParameter()
    {
        var cfg = Load("optimizer.lr=1e-3", "batch_size=8");
        Assert.Equal(8, cfg.Get<int>("batch_size"));
        var opt = cfg.Instantiate<TestOptimizer>("optimizer", new List<TestParameter> { new(1.0) });
        Assert.Equal(1e-3, opt.Lr);
    }

    [Fact]
    public void Apply_NumericLookingValueForStringParameter_StaysText()
    {
        var model = Load("model.name=007").Instantiate<TestModel>("model");
        Assert.Equal("007", model.Name);
    }

    [Fact]
    public void Apply_NewNestedKey_CreatesMaps()
    {
        var cfg = Load("a.b.c=5");
        Assert.Equal(5, cfg.Get<int>("a.b.c"));
    }

    [Fact]
    public void Apply_ListValue_ReplacesList()
    {
        var model = Load("model.lora_targets=[q_proj,k_proj,output_proj]").Instantiate<TestModel>("model");
        Assert.Equal(["q_proj", "k_proj", "output_proj"], model.Targets);
    }

    [Fact]
    public void Apply_Null_SetsNull()
    {
        var cfg = Load("model.name=null");
        Assert.Equal(ConfigNodeKind.Null, cfg.Find("model.name")!.Kind);
        Assert.Null(cfg.Instantiate<TestModel>("model").Name);
    }

    [Fact]
    public void Apply_Tilde_DeletesKey()
    {
        var cfg = Load("~model.lora_targets", "~batch_size");
        Assert.False(cfg.Has("model.lora_targets"));
        Assert.False(cfg.Has("batch_size"));
        Assert.Empty(cfg.Instantiate<TestModel>("model").Targets);
    }

    [Fact]
    public void Apply_TildeOnMissingKey_IsAnErrorWithSuggestion()
    {
        var p = Assert.Single(Problems("~model.num_layer"));
        Assert.Contains("no such key", p.Message);
        Assert.Contains("did you mean 'num_layers'", p.Message);
        Assert.Equal("override '~model.num_layer'", p.Location.ToString());
    }

    [Fact]
    public void Apply_ComponentShorthand_SetsComponentAndKeepsArguments()
    {
        var cfg = Load("model=test.models.tiny_big", "~model.num_layers", "~model.lora_targets");
        Assert.Equal("test.models.tiny_big", cfg.Find("model")!.ComponentName);
        Assert.Equal(99, cfg.Instantiate<TestModel>("model").NumLayers);
    }

    [Fact]
    public void Apply_ComponentShorthandKeepingIncompatibleKeys_ValidationNamesThem()
    {
        var problems = Problems("model=test.models.tiny_big");
        Assert.Contains(problems, p => p.Path == "model.num_layers" && p.Message.Contains("unknown key"));
    }

    [Fact]
    public void Apply_ListIndex_SetsItem()
    {
        Assert.Equal(["a", "z"], Load("tags.1=z").Get<string[]>("tags"));
    }

    [Fact]
    public void Apply_QuotedValue_IsString()
    {
        Assert.Equal("true", Load("x='true'").Get<string>("x"));
        Assert.True(Load("x=true").Get<bool>("x"));
    }

    [Theory]
    [InlineData("#1")]
    [InlineData("*star")]
    [InlineData("&amp")]
    public void Apply_ValueYamlWouldMisread_IsTakenLiterally(string value)
    {
        Assert.Equal(value, Load($"x={value}").Get<string>("x"));
    }

    [Fact]
    public void Apply_WrongTypeForParameter_NamesOverrideAsSource()
    {
        var p = Assert.Single(Problems("optimizer.lr=fast"));
        Assert.Equal("optimizer.lr", p.Path);
        Assert.Equal("override 'optimizer.lr=fast'", p.Location.ToString());
        Assert.Contains("expected double, got 'fast'", p.Message);
    }

    [Theory]
    [InlineData("novalue", "not of the form key=value")]
    [InlineData("=3", "not of the form key=value")]
    [InlineData("a..b=1", "empty key")]
    [InlineData("batch_size.x=1", "cannot set a key under 'batch_size'")]
    [InlineData("tags.7=1", "not an index")]
    public void Apply_BadOverride_IsReportedWithItsText(string arg, string expected)
    {
        var problems = Problems(arg);
        Assert.Contains(problems, p => p.Message.Contains(expected) && p.Location.ToString()!.Contains(arg));
    }

    [Fact]
    public void Apply_SeveralBadOverrides_AllReported()
    {
        Assert.Equal(3, Problems("novalue", "~nothing", "optimizer.lr=x").Count);
    }
}
