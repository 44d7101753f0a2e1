// The plain settings the training recipes share, as one options record (Registry/RecipeOptions): full and LoRA
// fine-tune bind it (LoRA and KD extend it), so each shared key has one declaration, one default and one check.
using SharpTune.Training;

namespace SharpTune.Recipes.Support;

/// <summary>
/// The plain settings the training recipes share (full and LoRA fine-tune, knowledge distillation): each property is
/// the top-level key of its snake_case name, with its type, default and documentation; <see cref="Problems"/> checks
/// them together. A recipe with more settings extends it with its own sealed record.
/// </summary>
public record FineTuneOptions : IRecipeOptions
{
    /// <summary>The run folder.</summary>
    [RecipeKey(Required = true, Description = "run folder: sharptune_config.yaml, logs, loss curves")]
    public string OutputDir { get; init; } = "";

    /// <summary>Samples per optimizer micro-batch, over all ranks.</summary>
    [RecipeKey(Required = true, Description = "the GLOBAL batch: under mpirun each rank takes its slice")]
    public int BatchSize { get; init; }

    /// <summary>Passes over the dataset.</summary>
    [RecipeKey(Required = true)]
    public int Epochs { get; init; }

    /// <summary>Cap on optimizer steps per epoch.</summary>
    [RecipeKey]
    public int? MaxStepsPerEpoch { get; init; }

    /// <summary>Cap on optimizer steps in all.</summary>
    [RecipeKey(Minimum = 1, Description = "stop after this many optimizer steps in all (the last checkpoint is then step_N)")]
    public int? MaxSteps { get; init; }

    /// <summary>Micro-batches per optimizer step.</summary>
    [RecipeKey]
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Clip the global gradient 2-norm to this; null: no clipping.</summary>
    [RecipeKey]
    public double? ClipGradNorm { get; init; }

    /// <summary>Also save step_N/ every N optimizer steps.</summary>
    [RecipeKey(Description = "also save step_N/ every N optimizer steps")]
    public int? SaveEveryNSteps { get; init; }

    /// <summary>Shuffle the data each epoch (seeded).</summary>
    [RecipeKey]
    public bool Shuffle { get; init; } = true;

    /// <summary>Continue from checkpointer.output_dir/recipe_state.</summary>
    [RecipeKey(Description = "continue from checkpointer.output_dir/recipe_state")]
    public bool ResumeFromCheckpoint { get; init; }

    /// <summary>Create the student's base folder with seeded random weights when it holds no model.</summary>
    [RecipeKey(Description = "create checkpointer.checkpoint_dir with seeded random weights when it holds no model")]
    public bool RandomInitCheckpoint { get; init; }

    /// <summary>Standard deviation of those random weights.</summary>
    [RecipeKey(Description = "standard deviation of those weights' matrices (HF initializer_range; default 0.02)")]
    public double RandomInitStd { get; init; } = Models.RandomInit.HfStd;

    /// <summary>Recompute the trained model's layer activations in backward.</summary>
    [RecipeKey(Description = "recompute (student) layer activations in backward")]
    public bool EnableActivationCheckpointing { get; init; }

    /// <summary>Log every N optimizer steps.</summary>
    [RecipeKey]
    public int LogEveryNSteps { get; init; } = 1;

    /// <summary>Log the process's peak RSS.</summary>
    [RecipeKey]
    public bool LogPeakMemoryStats { get; init; } = true;

    /// <summary>Where and how metrics are written.</summary>
    [RecipeKey]
    public MetricLoggerOptions MetricLogger { get; init; } = new();

    /// <summary>The seed; null: a random one (logged and saved).</summary>
    [RecipeKey(Description = "null: a random seed (logged and saved)")]
    public long? Seed { get; init; }

    /// <summary>cpu, cuda or auto.</summary>
    [RecipeKey(Description = "cpu | cuda | auto (cuda when available)")]
    public string Device { get; init; } = "cpu";

    /// <summary>fp32, bf16 or auto.</summary>
    [RecipeKey(Description = "fp32 | bf16 | auto (bf16 where native and measured faster)")]
    public string Dtype { get; init; } = "fp32";

    /// <inheritdoc/>
    public virtual IEnumerable<(string Key, string Message)> Problems()
    {
        if (RandomInitStd <= 0) yield return ("random_init_std", $"must be positive, got {RandomInitStd}");
        if (BatchSize < 1) yield return ("batch_size", $"must be at least 1, got {BatchSize}");
        if (Epochs < 1) yield return ("epochs", $"must be at least 1, got {Epochs}");
        if (GradientAccumulationSteps < 1) yield return ("gradient_accumulation_steps", $"must be at least 1, got {GradientAccumulationSteps}");
        if (MaxStepsPerEpoch is < 1) yield return ("max_steps_per_epoch", $"must be at least 1 or null, got {MaxStepsPerEpoch}");
        if (MaxSteps is < 1) yield return ("max_steps", $"must be at least 1 or null, got {MaxSteps}");
        if (SaveEveryNSteps is < 1) yield return ("save_every_n_steps", $"must be at least 1 or null, got {SaveEveryNSteps}");
        if (LogEveryNSteps < 1) yield return ("log_every_n_steps", $"must be at least 1, got {LogEveryNSteps}");
    }
}
