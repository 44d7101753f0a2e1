// What a recipe must remember to continue a run exactly where it stopped: counters, the data-loader position, the
// schedule position, the seed, and (stored beside this record by RecipeStateStore) the optimizer moments and the RNG.
// Mirrors torchtune's recipe_state.pt keys (seed, epochs_run, total_epochs, max_steps_per_epoch, steps_run,
// optimizer, dataloader) and adds what torchtune forgets (scheduler step, RNG state, total tokens).
using System.Text.Json.Serialization;

namespace SharpTune.Checkpointing;

/// <summary>Counters and positions of a training run, saved in <c>recipe_state/recipe_state.json</c>.</summary>
public sealed record RecipeState
{
    /// <summary>The seed the run was started with.</summary>
    [JsonPropertyName("seed")] public long Seed { get; init; }

    /// <summary>Epochs completed before the current one (the epoch to continue in).</summary>
    [JsonPropertyName("epochs_run")] public int EpochsRun { get; init; }

    /// <summary>Total epochs configured.</summary>
    [JsonPropertyName("total_epochs")] public int TotalEpochs { get; init; }

    /// <summary>Optimizer steps completed in the whole run.</summary>
    [JsonPropertyName("steps_run")] public long StepsRun { get; init; }

    /// <summary>The <c>max_steps_per_epoch</c> the run used (null for none).</summary>
    [JsonPropertyName("max_steps_per_epoch")] public int? MaxStepsPerEpoch { get; init; }

    /// <summary>Batches already consumed in the current epoch (the data loader skips this many on resume).</summary>
    [JsonPropertyName("dataloader_position")] public long DataLoaderPosition { get; init; }

    /// <summary>The schedule's <c>last_epoch</c> (index of the step whose learning rate is applied).</summary>
    [JsonPropertyName("scheduler_last_epoch")] public long SchedulerLastEpoch { get; init; }

    /// <summary>Valid (trained-on) tokens seen so far.</summary>
    [JsonPropertyName("total_tokens")] public long TotalTokens { get; init; }

    /// <summary>Free-form recipe values (e.g. the config hash) kept as strings.</summary>
    [JsonPropertyName("extra")] public IReadOnlyDictionary<string, string> Extra { get; init; } = new Dictionary<string, string>();
}
