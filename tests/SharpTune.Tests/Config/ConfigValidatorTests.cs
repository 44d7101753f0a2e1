// `validate` finds every problem at once: unknown component, unknown key (with suggestion), missing required key,
// wrong type, bad interpolation, and unknown/missing top-level keys when the recipe declares them, each with file:line.
using SharpTune.Config;

namespace SharpTune.Tests.Config;

public sealed class ConfigValidatorTests
{
    private static readonly ConfigKeySpec[] RecipeKeys =
    [
        new("batch_size", typeof(int), Required: true),
        new("output_dir", typeof(string), Required: true),
        new("model", typeof(TestModel), Required: true),
        new("optimizer", typeof(TestOptimizer), Required: false),
        new("extra", typeof(object), Required: false),
    ];

    private static IReadOnlyList<ConfigProblem> Validate(string yaml, IReadOnlyList<ConfigKeySpec>? keys = null, params string[] overrides) =>
        SharpTuneConfig.ValidateYaml(yaml, "v.yaml", overrides, TestComponents.Registry, keys).Problems;

    [Fact]
    public void Validate_ValidConfig_HasNoProblems()
    {
        Assert.Empty(Validate("batch_size: 2\noutput_dir: /tmp\nmodel:\n  _component_: test.models.tiny\n  num_layers: 1\n", RecipeKeys));
    }

    [Fact]
    public void Validate_UnknownComponent_SuggestsClosest()
    {
        var p = Assert.Single(Validate("model:\n  _component_: test.models.tiyn\n  num_layers: 1\n"));
        Assert.Equal("v.yaml:2:16", p.Location.ToString());
        Assert.Contains("unknown component 'test.models.tiyn'", p.Message);
        Assert.Contains("did you mean 'test.models.tiny'", p.Message);
    }

    [Fact]
    public void Validate_UnknownKey_SuggestsParameter()
    {
        var p = Assert.Single(Validate("model:\n  _component_: test.models.tiny\n  num_layers: 1\n  dropuot: 0.1\n"));
        Assert.Equal("v.yaml:4:12", p.Location.ToString());
        Assert.Equal("model.dropuot", p.Path);
        Assert.Contains("did you mean 'dropout'", p.Message);
    }

    [Fact]
    public void Validate_MissingRequiredKey_IsReportedAtComponent()
    {
        var p = Assert.Single(Validate("model:\n  _component_: test.models.tiny\n"));
        Assert.Equal("v.yaml:2:3", p.Location.ToString());
        Assert.Contains("missing required key 'num_layers' (int)", p.Message);
    }

    [Fact]
    public void Validate_RecipeSuppliedParameter_IsNotMissing()
    {
        Assert.Empty(Validate("optimizer:\n  _component_: test.optim.AdamW\n  lr: 1\n"));
    }

    [Fact]
    public void Validate_WrongTypes_InNestedComponentsAndLists()
    {
        var problems = Validate("""
            loss:
              _component_: test.loss.ForwardKL
              teacher:
                _component_: test.models.tiny
                num_layers: many
                lora_targets: q_proj
                dtype: fp8
            """);
        Assert.Equal(3, problems.Count);
        Assert.Contains(problems, p => p.Path == "loss.teacher.num_layers" && p.Message == "expected int, got 'many'" && p.Location!.Value.Line == 5);
        Assert.Contains(problems, p => p.Path == "loss.teacher.lora_targets" && p.Message.Contains("expected a list of string"));
        Assert.Contains(problems, p => p.Path == "loss.teacher.dtype" && p.Message.Contains("one of float32"));
    }

    [Fact]
    public void Validate_ComponentOfWrongTypeForRecipeKey_IsReported()
    {
        var problems = Validate("batch_size: 1\noutput_dir: o\nmodel:\n  _component_: test.loss.ForwardKL\n", RecipeKeys);
        var p = Assert.Single(problems);
        Assert.Contains("builds TestLoss, but this key needs TestModel", p.Message);
    }

    [Fact]
    public void Validate_RecipeKeys_UnknownMissingNullAndWrongType()
    {
        var problems = Validate("batch_sise: 2\noutput_dir: null\nmodel:\n  _component_: test.models.tiny\n  num_layers: x\n", RecipeKeys);
        Assert.Contains(problems, p => p.Path == "batch_sise" && p.Message.Contains("did you mean 'batch_size'") && p.Location!.Value.Line == 1);
        Assert.Contains(problems, p => p.Path == "batch_size" && p.Message.Contains("missing required key") && p.Location.ToString() == "v.yaml");
        Assert.Contains(problems, p => p.Path == "output_dir" && p.Message.Contains("is null"));
        Assert.Contains(problems, p => p.Path == "model.num_layers");
        Assert.Equal(4, problems.Count);
    }

    [Fact]
    public void Validate_EveryKindOfProblem_AllReportedTogether()
    {
        var problems = Validate("""
            batch_size: ${nope}
            output_dir: /x
            model:
              _component_: test.models.tiny
              num_layerz: 2
            optimizer:
              _component_: test.optim.Adam
            extra:
              deep:
                _component_: test.loss.ForwardKL
                kind: [a]
            """, RecipeKeys, "tokenizer.path=x");
        Assert.Contains(problems, p => p.Message.Contains("bad interpolation"));
        Assert.Contains(problems, p => p.Message.Contains("unknown key 'num_layerz'"));
        Assert.Contains(problems, p => p.Message.Contains("missing required key 'num_layers'"));
        Assert.Contains(problems, p => p.Message.Contains("unknown component 'test.optim.Adam'"));
        Assert.Contains(problems, p => p.Path == "extra.deep.kind" && p.Message.Contains("expected string"));
        Assert.Contains(problems, p => p.Path == "tokenizer" && p.Message.Contains("unknown key 'tokenizer'"));
        Assert.All(problems, p => Assert.NotNull(p.Location));
    }

    [Fact]
    public void Load_InvalidConfig_ThrowsWithAllProblems()
    {
        var e = Assert.Throws<ConfigException>(() => SharpTuneConfig.FromYaml("a: ${x}\nb: ${y}\n", "t.yaml"));
        Assert.Equal(2, e.Problems.Count);
        Assert.StartsWith("2 config problems:", e.Message);
    }
}
