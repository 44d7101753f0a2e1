// A recipe's options record is the one source of its plain keys: the validator sees them (names, types, required),
// binding applies the record's defaults and refuses bad values naming the key, and a key declared twice is refused.
using SharpTune.Config;
using SharpTune.Recipes;

namespace SharpTune.Tests.Recipes.Registry;

public sealed record TestOptions : IRecipeOptions
{
    [RecipeKey(Required = true)]
    public int Steps { get; init; }

    [RecipeKey(Description = "a ratio in [0, 1]")]
    public double MixRatio { get; init; } = 0.25;

    public string NotAKey { get; init; } = "";

    public IEnumerable<(string Key, string Message)> Problems()
    {
        if (MixRatio is < 0 or > 1) yield return ("mix_ratio", $"must be in [0, 1], got {MixRatio}");
    }
}

[Recipe("test_options", Description = "reads its settings through an options record")]
[RecipeOptions(typeof(TestOptions))]
[RecipeKey("model", typeof(object))]
public sealed class OptionsRecipe(SharpTuneConfig config, IRecipeReporter reporter) : IRecipe
{
    public TestOptions Options { get; } = RecipeOptions.Bind<TestOptions>(config);
    public void Setup(CancellationToken cancellationToken) => reporter.Info("setup");
    public void Train(CancellationToken cancellationToken) { }
    public void Cleanup() { }
}

/// <summary>Not a registered recipe (no [Recipe]): a registry scan would refuse it.</summary>
[RecipeOptions(typeof(TestOptions))]
[RecipeKey("steps", typeof(int))]
public sealed class TwiceDeclared;

public sealed class RecipeOptionsTests
{
    [Fact]
    public void Keys_OptionsRecord_SnakeCaseNamesAndPropertyTypesOnlyForRecipeKeyProperties()
    {
        var keys = RecipeOptions.Keys(typeof(TestOptions)).Select(k => k.Key.ToSpec()).ToList();

        Assert.Equal(["mix_ratio", "steps"], keys.Select(k => k.Name).Order());
        Assert.Equal(typeof(double), keys.Single(k => k.Name == "mix_ratio").Type);
        Assert.True(keys.Single(k => k.Name == "steps").Required);
    }

    [Fact]
    public void Bind_SetAndUnsetKeys_ValuesAndRecordDefaults()
    {
        var options = RecipeOptions.Bind<TestOptions>(SharpTuneConfig.FromYaml("steps: 3\nmix_ratio: null\n", "o.yaml"));

        Assert.Equal(3, options.Steps);
        Assert.Equal(0.25, options.MixRatio); // null means "not set": the record's default
    }

    [Fact]
    public void Bind_ValueItsChecksRefuse_ConfigErrorNamingTheKey()
    {
        var e = Assert.Throws<ConfigException>(() => RecipeOptions.Bind<TestOptions>(SharpTuneConfig.FromYaml("steps: 3\nmix_ratio: 1.5\n", "o.yaml")));

        Assert.Contains("mix_ratio", e.Message);
        Assert.Contains("must be in [0, 1], got 1.5", e.Message);
    }

    [Fact]
    public void Bind_RequiredKeyMissing_ConfigError() =>
        Assert.Contains("missing required key 'steps'",
            Assert.Throws<ConfigException>(() => RecipeOptions.Bind<TestOptions>(SharpTuneConfig.FromYaml("mix_ratio: 0.5\n", "o.yaml"))).Message);

    [Fact]
    public void Scan_OptionsRecipe_ValidatorKnowsRecordAndClassKeys()
    {
        var registry = RecipeRegistry.Scan([typeof(OptionsRecipe).Assembly, typeof(RecipeRegistry).Assembly]);
        var recipe = registry.Get("test_options");

        Assert.Equal(["mix_ratio", "model", "steps"], recipe.Keys!.Select(k => k.Name).Order());
        var problems = SharpTuneConfig.ValidateYaml("steps: 1\nmix_ration: 0.5\n", "o.yaml", null, registry.Components, recipe.Keys).Problems;
        Assert.Contains(problems, p => p.Message.Contains("did you mean 'mix_ratio'"));
    }

    [Fact]
    public void Scan_KeyOnClassAndInOptions_Refused()
    {
        var e = Assert.Throws<InvalidOperationException>(() => RecipeRegistry.DeclaredKeys(typeof(TwiceDeclared)));

        Assert.Contains("declares the key 'steps' twice", e.Message);
    }

    [Fact]
    public void KnowledgeDistillation_Keys_PlainSettingsFromTheRecordComponentsFromTheClass()
    {
        var kd = RecipeRegistry.CreateDefault().Get("knowledge_distillation_single_device");

        var names = kd.Keys!.Select(k => k.Name).ToHashSet();
        Assert.Contains("kd_ratio", names);        // options record
        Assert.Contains("batch_size", names);      // options record
        Assert.Contains("kd_loss", names);         // component on the class
        Assert.Equal(names.Count, kd.Keys!.Count); // each once
    }

    [Fact]
    public void TrainingRecipes_SharedRecord_EachRecipeOnlyTheKeysItReads()
    {
        var all = RecipeRegistry.CreateDefault();
        string[] Keys(string recipe) => [.. all.Get(recipe).Keys!.Select(k => k.Name)];

        // save_adapter_weights_only means something to LoRA and KD, nothing to a full fine-tune: there it is an unknown key
        Assert.DoesNotContain("save_adapter_weights_only", Keys("full_finetune_single_device"));
        Assert.Contains("save_adapter_weights_only", Keys("lora_finetune_single_device"));
        Assert.Contains("save_adapter_weights_only", Keys("knowledge_distillation_single_device"));
        Assert.DoesNotContain("kd_ratio", Keys("lora_finetune_single_device"));
        var problems = SharpTuneConfig.ValidateYaml("save_adapter_weights_only: true\n", "f.yaml", null, all.Components,
            all.Get("full_finetune_single_device").Keys).Problems;
        Assert.Contains(problems, p => p.Message.Contains("save_adapter_weights_only", StringComparison.Ordinal) && p.Message.Contains("unknown", StringComparison.OrdinalIgnoreCase));
    }
}
