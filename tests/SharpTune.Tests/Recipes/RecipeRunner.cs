// Runs a training recipe in-process on a shipped tiny config with overrides (all paths redirected into a temporary
// folder), recording what it reports. Recipe tests share one non-parallel collection: they seed libtorch's global
// generator and fix its thread count, which tests running beside them would otherwise disturb.
using SharpTune.Recipes;
using SharpTune.Training;

namespace SharpTune.Tests.Recipes;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class RecipeCollection
{
    public const string Name = "Recipes (global RNG and threads)";
}

internal sealed class RecordingReporter : IRecipeReporter
{
    /// <summary>Called with each info line (a test can cancel the run from here).</summary>
    public Action<string>? OnInfo { get; init; }

    public List<string> Infos { get; } = [];
    public List<string> Warnings { get; } = [];
    public List<string> Verboses { get; } = [];
    public List<(long Step, IReadOnlyDictionary<string, double> Values)> Metrics { get; } = [];

    public void Info(string message)
    {
        Infos.Add(message);
        OnInfo?.Invoke(message);
    }
    public void Warning(string message) => Warnings.Add(message);
    public void Verbose(string message) => Verboses.Add(message);
    void IRecipeReporter.Metrics(long step, IReadOnlyDictionary<string, double> values) => Metrics.Add((step, values));
    public void Progress(string stage, long completed, long total) { }
}

internal static class RecipeRunner
{
    private static readonly RecipeRegistry Registry = RecipeRegistry.CreateDefault();

    /// <summary>Small, fast settings shared by every tiny run.</summary>
    public static readonly string[] Fast =
        ["dataset.num_samples=96", "batch_size=4", "log_every_n_steps=1", "metric_logger.tensorboard=false", "threads=1"];

    public static RecordingReporter Run(string recipe, string config, params string[] overrides) =>
        Run(new RecordingReporter(), CancellationToken.None, recipe, config, overrides);

    public static RecordingReporter Run(RecordingReporter reporter, CancellationToken cancel, string recipe, string config, params string[] overrides) =>
        RunExact(reporter, cancel, recipe, config, [.. Fast, .. overrides]);

    /// <summary>As <see cref="Run(string, string, string[])"/> without the <see cref="Fast"/> training settings
    /// (for recipes that do not train).</summary>
    public static RecordingReporter RunExact(string recipe, string config, params string[] overrides) =>
        RunExact(new RecordingReporter(), CancellationToken.None, recipe, config, overrides);

    private static RecordingReporter RunExact(RecordingReporter reporter, CancellationToken cancel, string recipe, string config, string[] overrides)
    {
        var info = Registry.Get(recipe);
        var path = ConfigCatalog.CreateDefault().Resolve(config);
        var result = Registry.Validate(info, path, overrides);
        Assert.True(result.IsValid, string.Join("\n", result.Problems));
        RecipeRegistry.Run(info, result.Config!, reporter, cancel);
        return reporter;
    }

    /// <summary>Trains the tiny teacher from scratch into <paramref name="dir"/>/teacher; returns its epoch_0 folder.</summary>
    public static string TrainTeacher(string dir, int steps = 24, params string[] extra)
    {
        Run("full_finetune_single_device", "tiny/teacher_full_single_device",
            [$"output_dir={dir}/teacher", $"checkpointer.checkpoint_dir={dir}/teacher_init", $"max_steps_per_epoch={steps}", .. extra]);
        return Path.Combine(dir, "teacher", "epoch_0");
    }

    public static List<IReadOnlyDictionary<string, double>> Log(string outputDir) =>
        [.. JsonlMetricLogger.Read(Path.Combine(outputDir, "logs", "metrics.jsonl"))];

    /// <summary>Mean loss of the first and last <paramref name="n"/> logged steps.</summary>
    public static (double First, double Last) LossTrend(string outputDir, int n = 5, string key = "loss")
    {
        var log = Log(outputDir);
        return (log.Take(n).Average(r => r[key]), log.TakeLast(n).Average(r => r[key]));
    }
}
