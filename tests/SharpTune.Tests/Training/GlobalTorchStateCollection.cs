namespace SharpTune.Tests.Training;

/// <summary>
/// Tests that depend on process-wide state — libtorch's default RNG (manual_seed, dropout), the thread count, or the
/// process RSS — join this collection: xunit runs it alone, after the parallel collections, so no other test
/// draws from the generator or allocates in between.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalTorchStateCollection
{
    public const string Name = "global torch state";
}
