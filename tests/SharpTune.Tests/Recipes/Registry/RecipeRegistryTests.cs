// The recipe contract: recipes are found by attribute, declared keys are checked, and Run drives
// constructor -> Setup -> Train -> Cleanup, calling Cleanup even when a stage fails or is cancelled.
using SharpTune.Config;
using SharpTune.Recipes;

namespace SharpTune.Tests.Recipes.Registry;

[Recipe("test_lifecycle", Description = "records its lifecycle")]
[RecipeKey("fail_in", typeof(string), Description = "none | setup | train")]
[RecipeKey("steps", typeof(int), Required = true)]
public sealed class LifecycleRecipe(SharpTuneConfig config, IRecipeReporter reporter) : IRecipe
{
    public static readonly List<string> Calls = [];
    private readonly string _failIn = config.Get("fail_in", "none");
    private readonly int _steps = config.Get<int>("steps");

    public void Setup(CancellationToken cancellationToken)
    {
        Calls.Add("setup");
        if (_failIn == "setup") throw new InvalidOperationException("setup failed");
    }

    public void Train(CancellationToken cancellationToken)
    {
        for (var i = 0; i < _steps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Calls.Add($"step{i}");
            reporter.Metrics(i, new Dictionary<string, double> { ["loss"] = 1.0 / (i + 1) });
        }
        if (_failIn == "train") throw new InvalidOperationException("train failed");
    }

    public void Cleanup() => Calls.Add("cleanup");
}

public sealed class RecipeRegistryTests
{
    private sealed class ListReporter : IRecipeReporter
    {
        public List<long> Steps { get; } = [];
        public void Info(string message) { }
        public void Warning(string message) { }
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) => Steps.Add(step);
        public void Progress(string stage, long completed, long total) { }
    }

    private static readonly RecipeRegistry Registry = RecipeRegistry.Scan([typeof(RecipeRegistryTests).Assembly, typeof(RecipeRegistry).Assembly]);

    private static List<string> RunWith(string yaml, CancellationToken token = default)
    {
        var recipe = Registry.Get("test_lifecycle");
        var cfg = SharpTuneConfig.FromYaml(yaml, "l.yaml", null, Registry.Components, recipe.Keys);
        lock (LifecycleRecipe.Calls)
        {
            LifecycleRecipe.Calls.Clear();
            try { RecipeRegistry.Run(recipe, cfg, new ListReporter(), token); }
            catch (Exception) { LifecycleRecipe.Calls.Add("threw"); }
            return [.. LifecycleRecipe.Calls];
        }
    }

    [Theory]
    [InlineData("knowledge_distillation_distributed", "knowledge_distillation_single_device")]
    [InlineData("lora_finetune_distributed", "lora_finetune_single_device")]
    [InlineData("full_finetune_distributed", "full_finetune_single_device")]
    public void CreateDefault_DistributedName_IsTheSingleDeviceClassWithItsKeys(string distributed, string singleDevice)
    {
        var all = RecipeRegistry.CreateDefault();

        var d = all.Get(distributed);
        var s = all.Get(singleDevice);

        Assert.Same(s.Type, d.Type);
        Assert.Equal(s.Keys!.Select(k => k.Name), d.Keys!.Select(k => k.Name));
        Assert.Contains("mpirun", d.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void Run_Success_CallsStagesInOrder() =>
        Assert.Equal(["setup", "step0", "step1", "cleanup"], RunWith("steps: 2\n"));

    [Fact]
    public void Run_SetupThrows_StillCleansUp() =>
        Assert.Equal(["setup", "cleanup", "threw"], RunWith("steps: 2\nfail_in: setup\n"));

    [Fact]
    public void Run_TrainThrows_StillCleansUp() =>
        Assert.Equal(["setup", "step0", "cleanup", "threw"], RunWith("steps: 1\nfail_in: train\n"));

    [Fact]
    public void Run_Cancelled_StopsAndCleansUp()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Equal(["setup", "cleanup", "threw"], RunWith("steps: 3\n", cts.Token));
    }

    [Fact]
    public void Scan_RecipeWithKeys_ExposesThemForValidation()
    {
        var recipe = Registry.Get("test_lifecycle");
        Assert.Equal(["fail_in", "steps"], recipe.Keys!.Select(k => k.Name).Order());
        var problems = SharpTuneConfig.ValidateYaml("stpes: 2\n", "k.yaml", null, Registry.Components, recipe.Keys).Problems;
        Assert.Contains(problems, p => p.Message.Contains("did you mean 'steps'"));
        Assert.Contains(problems, p => p.Message.Contains("missing required key 'steps'"));
    }

    [Fact]
    public void Get_UnknownRecipe_Suggests()
    {
        var e = Assert.Throws<ArgumentException>(() => Registry.Get("test_lifecyle"));
        Assert.Contains("did you mean 'test_lifecycle'", e.Message);
    }
}
