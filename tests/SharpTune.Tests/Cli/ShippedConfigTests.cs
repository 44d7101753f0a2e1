// Every shipped config names a registered recipe and validates against it: a config that drifts from its recipe
// (a renamed key, a removed component) fails here instead of at a user's first run.
using SharpTune.Recipes;

namespace SharpTune.Tests.Cli;

public sealed class ShippedConfigTests
{
    public static TheoryData<string> Configs()
    {
        var data = new TheoryData<string>();
        // Study files (`# study:` header) are not recipe configs; Study/ShippedStudyTests validates them.
        foreach (var c in ConfigCatalog.CreateDefault().All().Where(c => !SharpTune.Recipes.Study.StudySpec.IsStudyFile(c.Path))) data.Add(c.Name);
        return data;
    }

    [Fact]
    public void Catalog_BuildOutput_HasShippedConfigs() => Assert.NotEmpty(ConfigCatalog.CreateDefault().All());

    [Theory]
    [MemberData(nameof(Configs))]
    public void ShippedConfig_NamesRegisteredRecipeAndValidates(string name)
    {
        var registry = RecipeRegistry.CreateDefault();
        var entry = ConfigCatalog.CreateDefault().Find(name)!;
        Assert.False(entry.Recipe is null, $"{name} has no '# recipe:' header line");
        var recipe = registry.Get(entry.Recipe!);
        var result = registry.Validate(recipe, entry.Path, []);
        Assert.True(result.IsValid, string.Join("\n", result.Problems));
        var firstLines = File.ReadLines(entry.Path).TakeWhile(l => l.StartsWith('#')).ToList();
        Assert.Contains(firstLines, l => l.Contains($"sharptune run {recipe.Name} --config {name}", StringComparison.Ordinal));
    }

    [Fact]
    public void Registry_Default_HasTorchInfoWithDeclaredKeys()
    {
        var recipe = RecipeRegistry.CreateDefault().Get("torch_info");
        Assert.Contains(recipe.Keys!, k => k.Name == "output_dir" && k.Required);
        Assert.NotNull(RecipeRegistry.ReadSource(recipe));
    }
}
