// The one-call way to run a recipe from code: a config given as a shipped name, a YAML file, YAML text or a loaded
// SharpTuneConfig, validated exactly as `sharptune run` validates it (every problem at once, nothing run when
// invalid), then Setup -> Train -> Cleanup with events delivered to a callback instead of the console.
// Reference: torchtune's `tune run` (torchtune/_cli/run.py), which this mirrors for programs.
using SharpTune.Config;

namespace SharpTune.Recipes;

/// <summary>What a running recipe reports, as one record: <see cref="Kind"/> says which fields are set.</summary>
/// <param name="Kind"><c>info</c>, <c>warning</c>, <c>metrics</c> or <c>progress</c>.</param>
/// <param name="Message">The line of an info or warning event.</param>
/// <param name="Step">The step of a metrics event.</param>
/// <param name="Metrics">The values of a metrics event (<c>loss</c>, <c>lr</c>, <c>tokens_per_second</c> ...).</param>
/// <param name="Stage">The stage of a progress event (<c>epoch 1/1</c> ...).</param>
/// <param name="Completed">Items done in the stage.</param>
/// <param name="Total">Items in the stage; 0 when unknown.</param>
public sealed record RecipeEvent(string Kind, string? Message = null, long Step = 0, IReadOnlyDictionary<string, double>? Metrics = null,
    string? Stage = null, long Completed = 0, long Total = 0);

/// <summary>Runs SharpTune's recipes from a program.</summary>
/// <example>
/// Train the tiny teacher, then distil it into a LoRA student, printing the loss:
/// <code>
/// Tune.Run("full_finetune_single_device", "tiny/teacher_full_single_device", ["output_dir=runs/teacher"]);
/// var student = Tune.Distil("runs/teacher/epoch_0", "runs/student",
///     onEvent: e => { if (e.Kind == "metrics") Console.WriteLine($"step {e.Step}: loss {e.Metrics!["loss"]:F3}"); });
/// // student is runs/student/epoch_0, an HF folder: Pretrained.Load(student)
/// </code>
/// </example>
public static class Tune
{
    private static readonly Lazy<RecipeRegistry> DefaultRegistry = new(() => RecipeRegistry.CreateDefault());

    /// <summary>The recipes and components available (this assembly and the library).</summary>
    public static RecipeRegistry Registry => DefaultRegistry.Value;

    /// <summary>
    /// Runs <paramref name="recipe"/> with a config named like <c>sharptune run --config</c> takes it: a shipped
    /// config (<c>tiny/kd_lora_single_device</c>, from the <c>configs</c> folder next to the program or
    /// <c>$SHARPTUNE_CONFIGS_DIR</c>) or a YAML file path, with <c>key=value</c> <paramref name="overrides"/>.
    /// </summary>
    /// <exception cref="ConfigException">The config has problems (all listed); nothing ran.</exception>
    public static void Run(string recipe, string config, IEnumerable<string>? overrides = null, Action<RecipeEvent>? onEvent = null,
        CancellationToken cancellationToken = default)
    {
        var info = Registry.Get(recipe);
        var path = ConfigCatalog.CreateDefault().Resolve(config);
        Execute(info, Registry.Validate(info, path, overrides ?? []), onEvent, cancellationToken);
    }

    /// <summary>As <see cref="Run(string, string, IEnumerable{string}?, Action{RecipeEvent}?, CancellationToken)"/> for YAML text.</summary>
    /// <example><code>Tune.RunYaml("generate", "checkpoint_dir: /tmp/stories260K\nmax_new_tokens: 32", onEvent: e => Console.WriteLine(e.Message));</code></example>
    public static void RunYaml(string recipe, string yaml, IEnumerable<string>? overrides = null, Action<RecipeEvent>? onEvent = null,
        CancellationToken cancellationToken = default)
    {
        var info = Registry.Get(recipe);
        var result = SharpTuneConfig.ValidateYaml(yaml, "<yaml>", overrides, Registry.Components, info.Keys);
        Execute(info, result, onEvent, cancellationToken);
    }

    /// <summary>Runs <paramref name="recipe"/> with an already loaded config (checked again against the recipe's keys).</summary>
    public static void Run(string recipe, SharpTuneConfig config, Action<RecipeEvent>? onEvent = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        RunYaml(recipe, config.ToYaml(), null, onEvent, cancellationToken);
    }

    /// <summary>
    /// Distils the HF model in <paramref name="teacherDir"/> into a student with the knowledge-distillation recipe
    /// and <paramref name="config"/> (default: the tiny LoRA student of <c>tiny/kd_lora_single_device</c>), writing
    /// to <paramref name="outputDir"/>. Returns the last epoch's HF folder, loadable with <see cref="Pretrained.Load"/>.
    /// </summary>
    public static string Distil(string teacherDir, string outputDir, string config = "tiny/kd_lora_single_device",
        IEnumerable<string>? overrides = null, Action<RecipeEvent>? onEvent = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(teacherDir);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputDir);
        if (!Directory.Exists(teacherDir)) throw new DirectoryNotFoundException($"teacher folder not found: {teacherDir}");
        var all = new List<string> { $"teacher_checkpointer.checkpoint_dir={teacherDir}", $"output_dir={outputDir}" };
        all.AddRange(overrides ?? []);
        Run("knowledge_distillation_single_device", config, all, onEvent, cancellationToken);
        var last = Directory.Exists(outputDir)
            ? Directory.EnumerateDirectories(outputDir, "epoch_*").Select(d => (Dir: d, N: int.TryParse(Path.GetFileName(d)[6..], out var n) ? n : -1))
                .Where(e => e.N >= 0).OrderBy(e => e.N).LastOrDefault().Dir
            : null;
        return last ?? throw new InvalidDataException($"the distillation finished but wrote no epoch_N folder under {outputDir}");
    }

    private static void Execute(RecipeInfo recipe, ConfigValidation validation, Action<RecipeEvent>? onEvent, CancellationToken cancellationToken)
    {
        if (!validation.IsValid) throw new ConfigException(validation.Problems);
        RecipeRegistry.Run(recipe, validation.Config!, new CallbackReporter(onEvent), cancellationToken);
    }

    private sealed class CallbackReporter(Action<RecipeEvent>? onEvent) : IRecipeReporter
    {
        public void Info(string message) => onEvent?.Invoke(new RecipeEvent("info", message));
        public void Warning(string message) => onEvent?.Invoke(new RecipeEvent("warning", message));
        public void Metrics(long step, IReadOnlyDictionary<string, double> values) =>
            onEvent?.Invoke(new RecipeEvent("metrics", Step: step, Metrics: values));
        public void Progress(string stage, long completed, long total) =>
            onEvent?.Invoke(new RecipeEvent("progress", Stage: stage, Completed: completed, Total: total));
    }
}
