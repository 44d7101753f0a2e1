// Binding nodes to factory parameters: snake_case keys, enums, lists, defaults, nullable, nested components,
// recipe-supplied arguments, constructor-bound records, registry scanning, typed getters and their errors.
using SharpTune.Config;

namespace SharpTune.Tests.Config;

public sealed class ConfigBinderTests
{
    private static SharpTuneConfig Load(string yaml) => SharpTuneConfig.FromYaml(yaml, "b.yaml", null, TestComponents.Registry);

    [Fact]
    public void Instantiate_SnakeCaseKeysEnumListDefaults_BindToParameters()
    {
        var model = Load("""
            model:
              _component_: test.models.tiny
              num_layers: 3
              dtype: bfloat16
              lora_targets: [q_proj, v_proj]
            """).Instantiate<TestModel>("model");
        Assert.Equal(new TestModel(3, 0.0f, TestDtype.BFloat16, model.Targets, null, null), model);
        Assert.Equal(["q_proj", "v_proj"], model.Targets);
    }

    [Fact]
    public void Instantiate_NestedComponent_IsBuiltAsArgument()
    {
        var loss = Load("""
            loss:
              _component_: test.loss.ForwardKL
              teacher:
                _component_: test.models.tiny
                num_layers: 7
            """).Instantiate<TestLoss>("loss");
        Assert.Equal(7, loss.Teacher!.NumLayers);
        Assert.Equal("fkl", loss.Kind);
    }

    [Fact]
    public void Instantiate_RecipeSuppliedPositionalArgument_FillsFirstParameter()
    {
        var cfg = Load("optimizer:\n  _component_: test.optim.AdamW\n  lr: 0.5\n");
        var opt = cfg.Instantiate<TestOptimizer>("optimizer", new List<TestParameter> { new(1), new(2) });
        Assert.Equal([1.0, 2.0], opt.Parameters.Select(p => p.Value));
        Assert.Equal(0.5, opt.Lr);
        Assert.Equal(0.01, opt.WeightDecay);
    }

    [Fact]
    public void InstantiateWith_NamedArgument_FillsParameterByName()
    {
        var cfg = Load("optimizer:\n  _component_: test.optim.AdamW\n  lr: 0.5\n");
        var opt = cfg.InstantiateWith<TestOptimizer>("optimizer", new Dictionary<string, object?> { ["parameters"] = new List<TestParameter> { new(3) } });
        Assert.Equal([3.0], opt.Parameters.Select(p => p.Value));
    }

    [Fact]
    public void Instantiate_MissingRecipeArgument_SaysNotSupplied()
    {
        var e = Assert.Throws<ConfigException>(() => Load("optimizer:\n  _component_: test.optim.AdamW\n  lr: 0.5\n").Instantiate<TestOptimizer>("optimizer"));
        Assert.Contains("missing required key 'parameters'", e.Message);
        Assert.Contains("not supplied by the recipe", e.Message);
    }

    [Fact]
    public void Instantiate_PlainMapForRecord_BindsConstructor()
    {
        var opts = Load("o:\n  _component_: test.options\n  options: {rank: 8}\n").Instantiate<TestOptions>("o");
        Assert.Equal(new TestOptions(8, 16), opts);
    }

    [Fact]
    public void Instantiate_FactoryThrows_ReportsComponentAndLocation()
    {
        var e = Assert.Throws<ConfigException>(() => Load("x:\n  _component_: test.throws\n  rank: -1\n").Instantiate<TestOptions>("x"));
        Assert.StartsWith("b.yaml:2:3: x: component 'test.throws' failed", e.Message);
        Assert.Contains("rank must be positive, got -1", e.Message);
        Assert.IsType<ArgumentOutOfRangeException>(e.InnerException);
    }

    [Fact]
    public void Get_TypedValues_Convert()
    {
        var cfg = Load("i: 1_000\nf: 1e-3\nb: True\ns: hi\nn: null\ninf: .inf\nl: [1, 2]\nd: {a: 1, b: 2}\ne: float32\n");
        Assert.Equal(1000, cfg.Get<int>("i"));
        Assert.Equal(1e-3f, cfg.Get<float>("f"));
        Assert.True(cfg.Get<bool>("b"));
        Assert.Equal("hi", cfg.Get<string>("s"));
        Assert.Null(cfg.Get<int?>("n"));
        Assert.Equal(double.PositiveInfinity, cfg.Get<double>("inf"));
        Assert.Equal([1L, 2L], cfg.Get<List<long>>("l"));
        Assert.Equal(2, cfg.Get<IReadOnlyDictionary<string, int>>("d")["b"]);
        Assert.Equal(TestDtype.Float32, cfg.Get<TestDtype>("e"));
        Assert.Equal(7, cfg.Get("missing", 7));
        Assert.Equal(7, cfg.Get("n", 7));
    }

    [Fact]
    public void Get_TypeWithStringConstructor_IsBuiltFromText()
    {
        var cfg = Load("u: https://example.org/x\nbad: 'http://[::1'\n");
        Assert.Equal("example.org", cfg.Get<Uri>("u").Host);
        var e = Assert.Throws<ConfigException>(() => cfg.Get<Uri>("bad"));
        Assert.Contains("is not a valid Uri", e.Message);
    }

    [Fact]
    public void Get_WrongType_NamesKeyFileLineAndValue()
    {
        var e = Assert.Throws<ConfigException>(() => Load("a: 1\nbatch_size: four\n").Get<int>("batch_size"));
        Assert.Equal("b.yaml:2:13: batch_size: expected int, got 'four'", e.Message);
    }

    [Fact]
    public void Get_Overflow_IsWrongType()
    {
        Assert.Throws<ConfigException>(() => Load("a: 99999999999\n").Get<int>("a"));
    }

    [Fact]
    public void Get_MissingKey_NamesFileAndSuggests()
    {
        var e = Assert.Throws<ConfigException>(() => Load("batch_size: 4\n").Get<int>("batch_sise"));
        Assert.Contains("b.yaml", e.Message);
        Assert.Contains("missing required key 'batch_sise'", e.Message);
        Assert.Contains("did you mean 'batch_size'", e.Message);
    }

    [Fact]
    public void Get_BadEnum_ListsAllowedValues()
    {
        var e = Assert.Throws<ConfigException>(() => Load("e: fp8\n").Get<TestDtype>("e"));
        Assert.Contains("one of float32, bfloat16", e.Message);
    }

    [Theory]
    [InlineData("loraRank", "lora_rank")]
    [InlineData("maxSeqLen", "max_seq_len")]
    [InlineData("useKVCache", "use_kv_cache")]
    [InlineData("numKvHeads", "num_kv_heads")]
    [InlineData("x", "x")]
    public void ToSnakeCase_CamelCase_GivesTorchtuneKey(string name, string expected) => Assert.Equal(expected, Names.ToSnakeCase(name));

    [Theory]
    [InlineData("kitten", "sitting", 3)]
    [InlineData("", "abc", 3)]
    [InlineData("flaw", "lawn", 2)]
    [InlineData("same", "same", 0)]
    public void Levenshtein_KnownPairs_GiveTextbookDistance(string a, string b, int d) => Assert.Equal(d, Names.Levenshtein(a, b));

    [Fact]
    public void DidYouMean_FarCandidate_GivesNothing()
    {
        Assert.Null(Names.DidYouMean("batch_size", ["optimizer", "model"]));
        Assert.Equal("num_layers", Names.DidYouMean("num_layer", ["num_layers", "dropout"]));
    }

    [Fact]
    public void Scan_TestAssembly_FindsDeclaredComponents()
    {
        Assert.Contains("test.models.tiny", TestComponents.Registry.Names);
        Assert.Contains("test.optim.AdamW", TestComponents.Registry.Names);
    }
}
